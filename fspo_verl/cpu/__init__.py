"""Embedded CPU backend: run verl 0.9.1's real V1 trainer (Ray, TransferQueue, FSDP2 over gloo, agent and
reward loops) with no GPU, rollouts served by Hugging Face transformers (``rollout.name=hf``).

:func:`register` runs in every verl process (through ``fspo_verl._registration.OPTIONAL_COMPONENTS``) and
is cheap: it registers the ``cpu`` platform and the ``hf`` rollout by loader/dotted path, and, only when
``VERL_PLATFORM=cpu`` selects the backend, installs the CPU fixes as post-import hooks
(:mod:`fspo_verl.cpu.patches`) and the driver-side config check (:mod:`fspo_verl.preflight.cpu`).

:func:`prepare_cpu_environment` is what a launcher calls before ``ray.init`` to select the backend.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType

from omegaconf import DictConfig

from fspo_verl.common.verl_internals import is_patched, patch_once
from fspo_verl.common.ray_cluster import (
    ClusterUnreachable,
    drop_local_only_ray_init,
    forward_environment,
)
from fspo_verl.cpu.platform import PLATFORM_NAME
from fspo_verl.preflight.cpu import (
    CPUConfigError,
    check_cpu_config,
    register_launcher_check,
    required_logical_cpus,
    running_cluster_resources,
)

HF_ROLLOUT = "hf"
HF_ADAPTER_PATH = "fspo_verl.rollout_hf.adapter.HFServerAdapter"

#: environment of every process of a CPU run (Ray workers inherit the driver's environment on a local
#: ``ray.init``). Thread caps: our choice, so that 2 FSDP workers + rollout server share a small machine
#: instead of each spawning one thread per core. TQ_NUM_THREADS: TransferQueue sets torch's thread count to it
#: (default 8) around every put/get and, on a machine with fewer physical cores, logs a WARNING each time
#: (one line per rollout written: 76% of the 40-step demo's console); 1 matches the thread caps above and silences it.
CPU_ENVIRONMENT = {
    "VERL_PLATFORM": PLATFORM_NAME,
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TQ_NUM_THREADS": "1",
}

#: what the Ray workers of a CPU run need from the driver's environment; on a running cluster they do not
#: inherit it, so these go into ray_kwargs.ray_init.runtime_env.env_vars (those set, when they are set):
#: the backend's variables, the logger paths prepare_run sets, and the demo assets' cache.
FORWARDED_ENVIRONMENT = (*CPU_ENVIRONMENT, "VERL_FILE_LOGGER_PATH", "TENSORBOARD_DIR", "FSPO_VERL_CACHE")


def backend_selected() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def prepare_cpu_environment() -> dict[str, str]:
    """Select the CPU backend in this process and in the Ray workers it starts; returns the variables set.

    Call before ``ray.init`` (and before verl resolves its platform). Also installs the CPU fixes in this
    process, in case ``import verl`` already ran without ``VERL_PLATFORM=cpu``.
    """
    for key, value in CPU_ENVIRONMENT.items():
        os.environ[key] = value
    register()
    return dict(CPU_ENVIRONMENT)


def prepare_run(config: DictConfig) -> None:
    """Driver-side preparation of a CPU run, called by ``fspo-verl train`` (``fspo_verl.backend: cpu``).

    Selects the backend for this process and the Ray workers and checks the config (raises
    :class:`CPUConfigError` before Ray starts). Where the run's files go is not a backend matter:
    :mod:`fspo_verl.cli.run_dir` places them, for every backend.
    """
    prepare_cpu_environment()
    check_for_ray(config)


def check_for_ray(config: DictConfig) -> dict[str, float] | None:
    """Check ``config`` against the Ray it will run on; returns that Ray's resources when it is already running.

    - Ray initialized in this process: its ``ray.cluster_resources()``.
    - A running cluster to join (``RAY_ADDRESS``, a Ray job, ``ray_kwargs.ray_init.address``): its resources,
      read without connecting (:mod:`fspo_verl.common.ray_cluster`); then the ``ray_kwargs.ray_init`` keys
      Ray rejects when connecting (the CPU preset's ``num_cpus``/``num_gpus``) are set to null, with a note,
      and :data:`FORWARDED_ENVIRONMENT` goes into ``ray_init.runtime_env.env_vars`` (set it before calling).
    - Otherwise a new local Ray, sized by ``ray_kwargs.ray_init``.

    Raises :class:`CPUConfigError` on a config that cannot run there or a cluster that does not answer.
    """
    import ray

    if ray.is_initialized():
        resources = ray.cluster_resources()
    else:
        try:
            resources = running_cluster_resources(config)
        except ClusterUnreachable as err:
            raise CPUConfigError(str(err)) from None
    check_cpu_config(config, resources)
    if resources is not None and not ray.is_initialized():
        dropped = drop_local_only_ray_init(config)
        forward_environment(config, list(FORWARDED_ENVIRONMENT))
        print(f"fspo_verl cpu backend: joining the running Ray cluster ({resources.get('CPU', 0):g} logical CPUs, "
              f"{resources.get('GPU', 0):g} GPUs) with fspo_verl from {Path(__file__).parents[1]}; not passed to "
              f"ray.init, which refuses them there: {' '.join(dropped) or 'nothing'}")
    return resources


def _hook_validate_config(config_module: ModuleType) -> None:
    """Run :func:`check_cpu_config` first inside verl's driver-side ``validate_config``."""
    original = config_module.validate_config
    if is_patched(original):
        return

    @functools.wraps(original)
    def validate_config(config, *args, **kwargs):
        check_for_ray(config)
        return original(config, *args, **kwargs)

    patch_once(config_module, "validate_config", lambda _verls: validate_config)


def register() -> None:
    """Register the ``cpu`` platform and the ``hf`` rollout; with VERL_PLATFORM=cpu also install the fixes."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from fspo_verl.common.import_hooks import when_imported
    from fspo_verl.cpu.patches import install_cpu_patches
    from fspo_verl.cpu.platform import register_platform
    from fspo_verl.rollout_hf.replica import load_hf_replica

    register_platform()
    register_launcher_check()
    RolloutReplicaRegistry.register(HF_ROLLOUT, load_hf_replica)
    _ROLLOUT_REGISTRY[(HF_ROLLOUT, "async")] = HF_ADAPTER_PATH  # verl has no register function for adapters
    if backend_selected():
        install_cpu_patches()
        when_imported("verl.utils.config", _hook_validate_config)


__all__ = [
    "CPUConfigError",
    "CPU_ENVIRONMENT",
    "HF_ROLLOUT",
    "backend_selected",
    "check_cpu_config",
    "check_for_ray",
    "prepare_cpu_environment",
    "prepare_run",
    "register",
    "required_logical_cpus",
]
