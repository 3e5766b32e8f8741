"""Count the aten ops and host syncs a piece of torch code dispatches: a device-independent proxy of launch cost.

On a GPU a small loss costs kernel launches and host syncs rather than memory traffic (one (1024, 8192) fp32
tensor is read in ~10 us at HBM speeds, a launch costs ~5 us and a sync drains the stream), so the number of
aten ops per forward + backward, and the number of times the host waits for the device, predict the GPU time
of a loss on a CPU-only machine. The counts are deterministic: a test can assert them.

What is counted, inside ``with OpCounter() as c: ...``:
    c.ops    every aten op the dispatcher runs on this thread, backward included when ``loss.backward()`` is
             called inside the block on CPU (the autograd engine runs CPU backward on the calling thread);
             views, ``detach`` and ``_to_copy`` included, as each is a dispatch.
    c.syncs  host syncs: ``aten._local_scalar_dense`` (``.item()``, ``float(t)``, ``bool(t)``), ops whose output
             shape depends on data (``nonzero``, ``masked_select``, ``unique`` ...), and ``Tensor.tolist`` /
             ``Tensor.numpy`` calls, which read device memory on the host (on CPU they dispatch nothing, so
             they are counted by wrapping the two methods for the duration of the block).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: ops that read a device value on the host, or whose output shape depends on data (the host must wait)
SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense",
        "aten.nonzero",
        "aten.masked_select",
        "aten.unique",
        "aten._unique",
        "aten._unique2",
        "aten.unique_consecutive",
        "aten.unique_dim",
        "aten.equal",
        "aten.is_nonzero",
    }
)


def _packet_name(func: Any) -> str:
    """'aten.sum' for the overload aten.sum.dim_IntList."""
    return f"{func.namespace}.{func.__name__.split('.')[0]}"


class OpCounter(TorchDispatchMode):
    """Dispatch mode that counts aten ops (by overload name) and host syncs while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()
        self.syncs = 0
        self._saved: dict[str, Any] = {}

    @property
    def ops(self) -> int:
        """Total aten ops dispatched."""
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.by_op[str(func)] += 1
        if _packet_name(func) in SYNC_OPS:
            self.syncs += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> OpCounter:  # noqa: PYI034 (a mode subclass returns itself)
        for name in ("tolist", "numpy"):
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(tensor: torch.Tensor, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.syncs += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            for name, original in self._saved.items():
                setattr(torch.Tensor, name, original)
            self._saved.clear()


def count_loss_ops(loss_fn: Any, inputs: dict[str, torch.Tensor], **kwargs: Any) -> tuple[int, int]:
    """(aten ops, host syncs) of one forward + backward of a verl policy loss, as verl's ``ppo_loss`` calls it.

    ``inputs`` holds old_log_prob, log_prob (a leaf with requires_grad), advantages and response_mask, all
    (B, T); ``kwargs`` go to the loss (loss_agg_mode, config, rollout_is_weights). The metric dict's values are
    read as verl reads them (plain Python floats), so a loss that returns tensors pays their sync here.
    Call it twice to count the steady state: a first call may also build cached per-process constants.
    """
    inputs["log_prob"].grad = None
    with OpCounter() as counter:
        loss, metrics = loss_fn(**inputs, **kwargs)
        for value in metrics.values():
            if isinstance(value, torch.Tensor):
                value.item()
        loss.backward()
    inputs["log_prob"].grad = None
    return counter.ops, counter.syncs
