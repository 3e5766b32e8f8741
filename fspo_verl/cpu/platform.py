"""The ``cpu`` platform for verl's ``PlatformRegistry``: device cpu, gloo collectives, logical Ray ``GPU`` slots.

verl 0.9.1 ships platforms for CUDA, NPU and ROCm only, and auto-detection falls back to CUDA/NCCL when no
accelerator is found. Selecting this platform (``VERL_PLATFORM=cpu``, set by
:func:`fspo_verl.cpu.prepare_cpu_environment`) makes every ``verl.utils.device`` helper answer for the CPU:
``get_device_name() == "cpu"``, ``get_nccl_backend() == "gloo"``, ``get_torch_device()`` is
:data:`CPU_DEVICE_MODULE`, whose memory, cache and stream queries are safe no-ops.
"""

from __future__ import annotations

import types
from contextlib import contextmanager, nullcontext
from typing import Any, Optional

import torch
from verl.plugin.platform.platform_base import PlatformBase

#: the name users select with VERL_PLATFORM=cpu
PLATFORM_NAME = "cpu"


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _mem_get_info(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
    # (free, total) in bytes; CPU memory is not an accelerator pool, so report nothing used and nothing free.
    return 0, 0


#: what ``verl.utils.device.get_torch_device()`` returns on CPU: ``torch.cpu``'s stream API plus the
#: ``torch.cuda``-style memory/cache/RNG calls verl makes (``empty_cache``, ``mem_get_info``,
#: ``memory_allocated``, ``get_rng_state``, ...), which ``torch.cpu`` lacks.
CPU_DEVICE_MODULE = types.SimpleNamespace(
    is_available=lambda: True,
    device_count=lambda: 1,
    current_device=_zero,
    set_device=_noop,
    synchronize=_noop,
    empty_cache=_noop,
    ipc_collect=_noop,
    mem_get_info=_mem_get_info,
    memory_allocated=_zero,
    memory_reserved=_zero,
    max_memory_allocated=_zero,
    max_memory_reserved=_zero,
    reset_peak_memory_stats=_noop,
    set_per_process_memory_fraction=_noop,
    get_device_name=lambda *_a, **_k: "cpu",
    get_rng_state=lambda *_a, **_k: torch.get_rng_state(),
    set_rng_state=lambda state, *_a, **_k: torch.set_rng_state(state),
    manual_seed=torch.manual_seed,
    manual_seed_all=torch.manual_seed,
    current_stream=torch.cpu.current_stream,
    stream=lambda *_a, **_k: nullcontext(),
    Stream=torch.cpu.Stream,
    Event=torch.cpu.Event,
)


class PlatformCPU(PlatformBase):
    """verl platform for CPU-only machines (laptops, CI). Registered as ``cpu`` by :func:`register_platform`."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.SimpleNamespace:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: on a GPU host auto-detection must still find CUDA. Select with VERL_PLATFORM=cpu.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # verl passes get_device_id() straight to torch as a device (``.to(...)``, ``to_empty(device=...)``);
        # an int there means "accelerator <int>" and fails without one, "cpu" is the CPU.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # The device slot in verl's worker bundles: a *logical* GPU (the CPU preset declares as many as there
        # are workers; `ray start --num-gpus=N` on a CPU node). One slot per worker makes verl's per-node
        # STRICT_PACK groups spread over the nodes as on a GPU cluster; with "CPU" here every bundle was
        # {"CPU": 1} and both of a 2-node run's FSDP workers fitted on one node. The bundle's CPU count is
        # kept at 1 by fix 4 in fspo_verl.cpu.patches.
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        # The actor itself asks for no GPU (Ray would set CUDA_VISIBLE_DEVICES for it): its bundle holds the
        # slot; its device share becomes a share of the bundle's one logical CPU.
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def register_platform() -> None:
    """Add ``cpu`` to verl's ``PlatformRegistry`` (idempotent, cheap)."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
