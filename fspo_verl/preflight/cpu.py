"""Driver-side checks of a verl config for the CPU backend: fail before Ray starts, never hang.

:func:`check_cpu_config` raises :class:`CPUConfigError` naming the config key, the bad value and the fix.
It runs inside verl's ``validate_config`` in the driver (hooked by :func:`fspo_verl.cpu.register` when
``VERL_PLATFORM=cpu``) and from ``fspo-verl train``.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.common.ray_cluster import (
    ClusterUnreachable,
    cluster_resources,
    existing_cluster_address,
)

#: attention kernels that run on CPU (flash-attention kernels are CUDA-only)
CPU_ATTENTION = ("sdpa", "eager")
#: TransferQueue actors that each hold one logical CPU for their lifetime: the controller
TQ_CONTROLLER_CPUS = 1
#: head-room for actors that need one free logical CPU to be scheduled (TaskRunner, agent-loop and reward
#: workers, load balancer hold none afterwards). Our choice: one is enough because they are placed one by one.
SCHEDULING_HEADROOM_CPUS = 1


class CPUConfigError(ValueError):
    """A verl config that cannot run on the CPU backend; the message says which key and how to fix it."""


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    """``config_value``, but a key set to null also reads as ``default``, and a non-DictConfig has no keys."""
    value = config_value(config, dotted, default) if isinstance(config, DictConfig) else default
    return default if value is None else value


def training_world_size(config: Any) -> int:
    return int(_get(config, "trainer.n_gpus_per_node", 1)) * int(_get(config, "trainer.nnodes", 1))


def required_logical_cpus(config: Any) -> int:
    """Logical CPUs Ray must offer: one per FSDP worker bundle, one per TransferQueue storage unit, one for
    the TransferQueue controller, plus scheduling head-room. With fewer, TransferQueue waits forever for a
    placement group."""
    storage_units = int(_get(config, "transfer_queue.backend.SimpleStorage.num_data_storage_units", 8))
    return training_world_size(config) + storage_units + TQ_CONTROLLER_CPUS + SCHEDULING_HEADROOM_CPUS


def _ray_logical(config: Any, key: str, default: float) -> float:
    value = _get(config, f"ray_kwargs.ray_init.{key}")
    return float(default if value is None else value)


def check_cpu_config(config: Any, ray_resources: dict[str, float] | None = None) -> None:
    """Raise :class:`CPUConfigError` if ``config`` (verl's full PPO config) cannot run on the CPU backend.

    ray_resources: the cluster's logical resources when Ray is already running (``ray.cluster_resources()``);
    otherwise they are read from ``ray_kwargs.ray_init`` (``num_cpus`` null means ``os.cpu_count()``).
    """
    problems = cpu_config_problems(config, ray_resources)
    if problems:
        raise CPUConfigError("the CPU backend cannot run this config:\n  - " + "\n  - ".join(problems))


def register_launcher_check() -> None:
    """Add the CPU checks to ``fspo-verl validate|train`` (``fspo_verl.preflight.registry``) for ``fspo_verl.backend=cpu``."""
    from fspo_verl.preflight import registry

    if _launcher_check in registry.CHECKS:
        return
    # the cross-setting, down-sampling and poll-interval checks report before this one, as they always have
    registry.load_checks(registry.CHECK_MODULES[:3])
    registry.register_check(_launcher_check)


def _launcher_check(config: DictConfig):
    from fspo_verl.preflight.registry import Findings

    if _get(config, "fspo_verl.backend") != "cpu":
        return Findings()
    try:
        resources = running_cluster_resources(config)
    except ClusterUnreachable as err:
        return Findings(errors=[str(err)])
    return Findings(errors=cpu_config_problems(config, resources))


def running_cluster_resources(config: Any) -> dict[str, float] | None:
    """The logical resources of the Ray cluster this run will join (``RAY_ADDRESS``, a Ray job, or
    ``ray_kwargs.ray_init.address``), or None when verl's ``ray.init`` will start a new local Ray.
    Raises :class:`ClusterUnreachable` when the cluster does not answer."""
    address = existing_cluster_address(config)
    return None if address is None else cluster_resources(address)


def cpu_config_problems(config: Any, ray_resources: dict[str, float] | None = None) -> list[str]:
    """Every reason ``config`` cannot run on the CPU backend, one sentence each (see :func:`check_cpu_config`)."""
    problems: list[str] = []
    rollout = _get(config, "actor_rollout_ref.rollout.name")
    if rollout != "hf":
        problems.append(
            f"actor_rollout_ref.rollout.name={rollout!r} needs a GPU; the CPU backend (VERL_PLATFORM=cpu) serves "
            "rollouts with transformers. Fix: actor_rollout_ref.rollout.name=hf, or run on a GPU without VERL_PLATFORM=cpu."
        )
    for role in ("actor_rollout_ref.model", "critic.model"):
        if role == "critic.model" and not _get(config, "critic.enable", False):
            continue
        attn = _get(config, f"{role}.override_config.attn_implementation")
        if attn not in CPU_ATTENTION:
            problems.append(
                f"{role}.override_config.attn_implementation={attn!r}: flash-attention kernels need CUDA "
                f"(verl defaults to flash_attention_2). Fix: +{role}.override_config.attn_implementation=sdpa."
            )
    for key in ("actor_rollout_ref.actor.strategy", "actor_rollout_ref.ref.strategy"):
        strategy = _get(config, key)
        if strategy is not None and strategy != "fsdp2":
            problems.append(f"{key}={strategy!r}: on CPU only fsdp2 runs (FSDP1 rejects CPU parameters). Fix: {key}=fsdp2.")
    device = _get(config, "trainer.device")
    if device is not None and device != "cpu":
        problems.append(f"trainer.device={device!r} with the CPU backend. Fix: trainer.device=cpu.")
    workers = training_world_size(config)
    tp = int(_get(config, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1))
    if workers % tp:
        problems.append(
            f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not divide the {workers} workers "
            "(trainer.n_gpus_per_node * trainer.nnodes). Fix: actor_rollout_ref.rollout.tensor_model_parallel_size=1."
        )
    need = required_logical_cpus(config)
    needs_cpus = (f"{workers} FSDP workers + {need - workers - 2} TransferQueue storage units + 1 controller + "
                  f"1 head-room = {need}; TransferQueue would wait forever")
    if ray_resources is not None:
        # a running cluster: ray_kwargs.ray_init cannot size it; its nodes were started with their resources
        have_cpus, have_gpus = ray_resources.get("CPU", 0.0), ray_resources.get("GPU", 0.0)
        if have_cpus < need:
            problems.append(
                f"the running Ray cluster has {have_cpus:g} logical CPUs (all alive nodes) and this config needs "
                f"{needs_cpus}. Fix: start its nodes with more logical CPUs (`ray start --num-cpus=N` on each; they "
                "add up), or fewer transfer_queue.backend.SimpleStorage.num_data_storage_units."
            )
        if have_gpus < workers:
            problems.append(
                f"the running Ray cluster has {have_gpus:g} logical GPUs and trainer.nnodes * trainer.n_gpus_per_node "
                f"= {workers} FSDP workers each need one (verl's resource-pool check counts Ray GPUs even on CPU). "
                "Fix: start its nodes with `ray start --num-gpus=N` (logical only; nothing uses a GPU), or fewer "
                "trainer.n_gpus_per_node / trainer.nnodes."
            )
        return problems
    have_cpus = _ray_logical(config, "num_cpus", os.cpu_count() or 1)
    have_gpus = _ray_logical(config, "num_gpus", 0)
    if have_cpus < need:
        problems.append(
            f"ray_kwargs.ray_init.num_cpus={have_cpus:g} is too few logical CPUs: {needs_cpus}. "
            f"Fix: ray_kwargs.ray_init.num_cpus={need} (logical CPUs, not cores), "
            "or fewer transfer_queue.backend.SimpleStorage.num_data_storage_units."
        )
    if have_gpus < workers:
        problems.append(
            f"ray_kwargs.ray_init.num_gpus={have_gpus:g}: verl's resource-pool check counts Ray GPUs "
            f"even on CPU and needs {workers} logical GPUs. Fix: +ray_kwargs.ray_init.num_gpus={workers} "
            "(logical only; nothing uses a GPU)."
        )
    return problems
