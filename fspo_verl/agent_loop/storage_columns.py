"""Trajectory fields as the columns TransferQueue's SimpleStorage stores, without building a TensorDict first.

verl's agent-loop worker writes each burst of trajectories with
``tq.async_kv_batch_put(fields=list_of_dict_to_tensordict(fields))``. With SimpleStorage (verl's default
``transfer_queue.backend.storage_backend``) most of that write is spent packing and unpacking, not storing.
In the demo's agent-loop worker (256 trajectories of 27 fields per step; profile in ``docs/profiles.md``):

- ``list_of_dict_to_tensordict`` is the largest share of the worker's busy time. It wraps each of the 17 non-tensor
  fields in a ``NonTensorStack`` of one ``NonTensorData`` per row (~4,400 tensorclass objects per step).
- TransferQueue then unpacks each ``NonTensorStack`` with ``tolist()`` and re-wraps the rows of each storage
  unit in a new one (``AsyncSimpleStorageManager._select_by_positions``).
- It unbinds every ragged (jagged nested) column six times (twice in each of two ``extract_field_schema``
  calls, once per storage unit). A jagged ``unbind`` runs in Python with two ``torch._check`` calls per row.

What a storage unit stores does not depend on that packing. SimpleStorage reads only ``batch_size``,
``keys()``, ``items()`` and ``[name]`` of ``fields``. It sends a plain list column as the same per-row
objects as a ``NonTensorStack`` (``is_non_tensor`` in the field schema either way). It sends a nested tensor
of either layout as its unbound per-row tensors (``is_nested`` and the same per-row shapes either way).

:class:`StorageColumns` is that input, built directly:

- a ``dict`` of columns with a ``batch_size``;
- tensor fields whose rows share one shape are stacked, ``(B, *shape)``, as verl does;
- ragged tensor fields become a strided nested tensor, whose ``unbind`` is one C++ call;
- every other field becomes a list of the rows' objects.

A test writes the same trajectories both ways into a real TransferQueue and compares everything a read
returns (fields, types, values) and the controller's field schema and tags. On one demo step's 256
trajectories the write costs 0.27x verl's (``benchmarks/bench_worker_overhead.py``, benchmarks/README.md).
Other storage backends keep verl's TensorDict (:func:`storage_columns_apply`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

#: the TransferQueue storage backend whose put path this layout is known to store exactly as verl's does
SIMPLE_STORAGE = "SimpleStorage"


class StorageColumns(dict):
    """``{field: column}`` for ``tq.async_kv_batch_put(fields=...)`` with ``batch_size == torch.Size([B])``.

    Built from ``B`` per-trajectory dicts with the keys of the first one, as verl's
    ``list_of_dict_to_tensordict`` is:

    - every row a tensor of one shape ``S``: ``torch.stack``, ``(B, *S)``;
    - every row a tensor, shapes differ: a strided nested tensor of the rows (``(B, j, ...)``);
    - otherwise: ``list`` of the ``B`` row values, in order.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            raise ValueError("StorageColumns needs at least one row")
        super().__init__()
        for name in rows[0]:
            values = [row[name] for row in rows]
            if all(isinstance(value, torch.Tensor) for value in values):
                if all(value.shape == values[0].shape for value in values):
                    self[name] = torch.stack(values)  # (B, *S)
                else:
                    self[name] = _strided_nested(values)  # (B, j, ...)
            else:
                self[name] = values  # B row objects
        self.batch_size = torch.Size([len(rows)])

    def __repr__(self) -> str:
        return f"StorageColumns(batch_size={list(self.batch_size)}, fields={sorted(self)})"


def _strided_nested(values: list[torch.Tensor]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns that the strided nested layout is a prototype, on every call
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage.*")
        return torch.nested.as_nested_tensor(values, layout=torch.strided)


def storage_columns_apply(config: Any) -> bool:
    """True when the run's TransferQueue backend is SimpleStorage (``transfer_queue.backend.storage_backend``,
    verl's default), the backend :class:`StorageColumns` is tested against."""
    transfer_queue = config.get("transfer_queue", {}) or {}
    backend = transfer_queue.get("backend", {}) or {}
    return backend.get("storage_backend", SIMPLE_STORAGE) == SIMPLE_STORAGE
