"""The four fixes verl 0.9.1 needs beyond a ``cpu`` platform, each applied to one verl function.

1. Process-group backend string. verl builds ``f"cpu:gloo,{device}:{backend}"``, which on CPU is
   ``"cpu:gloo,cpu:gloo"``; torch rejects a device named twice. :func:`process_group_backend` is the one
   place that builds the string; it replaces verl's default in ``initialize_global_process_group[_ray]``.
2. FSDP engine availability. verl registers its FSDP/FSDP2 engines for devices ``cuda`` and ``npu`` only;
   on ``cpu`` ``EngineRegistry.get_engine_cls`` raises. FSDP2 itself runs on CPU over gloo, so the cpu
   lookup falls back to the cuda registration (FSDP backends only).
3. Pinned memory. The FSDP2 engine hard-codes ``CPUOffloadPolicy(pin_memory=True)`` for forward-only models
   (the reference policy) and ``pin_memory()`` raises without an accelerator. On CPU the policy is built
   with ``pin_memory=False``.
4. Worker placement. ``RayResourcePool.get_placement_groups`` builds one bundle per worker,
   ``{"CPU": max_colocate_count, <platform resource>: 1}``, one STRICT_PACK group per node. The cpu
   platform's device slot is a logical ``GPU`` (:meth:`~fspo_verl.cpu.platform.PlatformCPU.ray_resource_name`),
   so a node started with ``--num-gpus=1`` takes one worker and the per-node groups spread over the nodes as
   on a GPU cluster. verl's ``max_colocate_count`` (3) would then reserve 3 logical CPUs per worker, which the
   CPU preset's budget (workers + TransferQueue storage units + 2) does not hold; on cpu the bundle keeps the
   one logical CPU per worker it had before, ``{"CPU": 1, "GPU": 1}``.

Each fix is a post-import hook (:mod:`fspo_verl.common.import_hooks`), installed only when the cpu platform
is selected, so no verl process pays for importing these modules early.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from fspo_verl.common.verl_internals import is_patched, mark_patched, patch_once
from fspo_verl.common.import_hooks import when_imported

#: training-engine backends that run on CPU (FSDP2 over gloo). FSDP1 imports too, but its
#: ``sync_module_states`` rejects CPU parameters, which ``check_cpu_config`` reports before Ray starts.
CPU_ENGINE_BACKENDS = ("fsdp", "fsdp2")


def process_group_backend(device: str, backend: str) -> str:
    """torch ``init_process_group`` backend string: gloo for CPU tensors plus ``device:backend``.

    ``process_group_backend("cuda", "nccl") == "cpu:gloo,cuda:nccl"`` (verl's own string) and
    ``process_group_backend("cpu", "gloo") == "cpu:gloo"`` (torch rejects ``"cpu:gloo,cpu:gloo"``).
    A different CPU backend than gloo is an error: CPU tensors would need two backends at once.
    """
    if device != "cpu":
        return f"cpu:gloo,{device}:{backend}"
    if backend != "gloo":
        raise ValueError(f"the cpu platform runs collectives over gloo; got backend {backend!r} for device 'cpu'")
    return "cpu:gloo"


def _default_backend() -> str:
    from verl.utils.device import get_device_name, get_nccl_backend

    return process_group_backend(get_device_name(), get_nccl_backend())


def _patch_distributed(dist_utils: ModuleType) -> None:
    """Make verl's process-group initialisers use :func:`process_group_backend` when no backend is given."""
    original_ray = dist_utils.initialize_global_process_group_ray
    if is_patched(original_ray):
        return

    @functools.wraps(original_ray)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original_ray(timeout_second=timeout_second, backend=backend or _default_backend())

    def initialize_global_process_group(timeout_second=36000):
        import os
        from datetime import timedelta

        import torch.distributed

        torch.distributed.init_process_group(
            backend=_default_backend(),
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    patch_once(dist_utils, "initialize_global_process_group_ray", lambda _verls: initialize_global_process_group_ray)
    patch_once(dist_utils, "initialize_global_process_group", lambda _verls: initialize_global_process_group)
    # modules that imported the name before this hook ran (``from ... import`` binds early)
    import sys

    for name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base", "verl.trainer.sft_trainer"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "initialize_global_process_group_ray"):
            patch_once(module, "initialize_global_process_group_ray", lambda _early: initialize_global_process_group_ray)


def _cpu_offload_policy_without_pinning(policy_cls: type) -> type:
    """A ``CPUOffloadPolicy`` subclass whose ``pin_memory`` is always False (pinning needs an accelerator)."""
    if is_patched(policy_cls):
        return policy_cls

    class CPUOffloadPolicyNoPin(policy_cls):  # type: ignore[misc, valid-type]
        def __init__(self, pin_memory: bool = False, **kwargs: Any) -> None:
            super().__init__(pin_memory=False, **kwargs)

    CPUOffloadPolicyNoPin.__name__ = CPUOffloadPolicyNoPin.__qualname__ = "CPUOffloadPolicy"
    return mark_patched(CPUOffloadPolicyNoPin)


def _patch_offload_policy(module: ModuleType) -> None:
    if getattr(module, "CPUOffloadPolicy", None) is not None:
        patch_once(module, "CPUOffloadPolicy", _cpu_offload_policy_without_pinning)


def _patch_engine_registry(engine_base: ModuleType) -> None:
    """On cpu, resolve FSDP engines through their cuda registration, and unpin their offload policy."""
    registry = engine_base.EngineRegistry
    original = registry.get_engine_cls.__func__
    if is_patched(original):
        return

    @functools.wraps(original)
    def get_engine_cls(cls, model_type: str, backend: str):
        from verl.utils.device import get_device_name

        try:
            engine_cls = original(cls, model_type, backend)
        except ValueError:
            if get_device_name() != "cpu" or backend not in CPU_ENGINE_BACKENDS:
                raise
            engine_cls = cls._engines[model_type][backend]["cuda"]
        import sys

        _patch_offload_policy(sys.modules[engine_cls.__module__])
        return engine_cls

    patch_once(registry, "get_engine_cls", lambda _verls: get_engine_cls)  # stays a classmethod


#: logical CPUs in each worker's placement bundle on the cpu platform (see fix 4 in the module docstring)
CPU_BUNDLE_CPUS = 1


def _patch_placement_groups(ray_base: ModuleType) -> None:
    """On cpu, build worker bundles with :data:`CPU_BUNDLE_CPUS` logical CPUs instead of ``max_colocate_count``.

    Only the bundles change: ``max_colocate_count`` itself is restored at once, because verl also divides a
    worker's device share by it (``1 / max_colocate_count`` of the bundle, for colocated worker groups).
    """
    pool_cls = ray_base.RayResourcePool
    original = pool_cls.get_placement_groups
    if is_patched(original):
        return

    @functools.wraps(original)
    def get_placement_groups(self, *args: Any, **kwargs: Any):
        from verl.utils.device import get_device_name

        if self.pgs is not None or not self.use_gpu or get_device_name() != "cpu":
            return original(self, *args, **kwargs)
        colocate = self.max_colocate_count
        self.max_colocate_count = CPU_BUNDLE_CPUS
        try:
            return original(self, *args, **kwargs)
        finally:
            self.max_colocate_count = colocate

    patch_once(pool_cls, "get_placement_groups", lambda _verls: get_placement_groups)


def install_cpu_patches() -> None:
    """Install the four fixes as post-import hooks (idempotent; cheap: imports nothing heavy)."""
    when_imported("verl.utils.distributed", _patch_distributed)
    when_imported("verl.utils.fsdp_utils", _patch_offload_policy)
    when_imported("verl.workers.engine.base", _patch_engine_registry)
    when_imported("verl.single_controller.ray.base", _patch_placement_groups)
