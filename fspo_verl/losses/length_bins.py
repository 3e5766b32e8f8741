"""Response-length bins for the per-length clip-rate diagnostics.

Bins are given by their upper edges ``e_1 < ... < e_K``. Bin k holds ``e_{k-1} < L <= e_k`` (``e_0 = 0``)
and a last open-ended bin holds ``L > e_K``, so K edges give K+1 bins named ``len_<lo>_<hi>``:
``len_0_256, len_256_512, ..., len_4096_inf``.

The losses emit two COUNTS per bin and micro-batch, never a rate: verl averages metrics over micro-batches
and DP ranks, and the mean of per-micro-batch rates is biased when bins are unevenly filled. The ratio of
the two counts' means is the exact global rate. Every bin is emitted on every call (zeros included):
verl's DP aggregation fails when ranks emit different key sets. No key contains "max" or "min", which
verl would reduce with max/min instead of mean.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import torch

#: a per-bin count metric: ``<prefix>/seqs_len_<lo>_<hi>`` or ``<prefix>/clipped_len_<lo>_<hi>`` (hi may be inf)
BIN_KEY = re.compile(r"^(?P<prefix>.+)/(?P<kind>seqs|clipped)_len_(?P<lo>\d+)_(?P<hi>\d+|inf)$")


def bin_names(edges: Sequence[int]) -> list[str]:
    """Names of the K+1 bins given K upper edges, e.g. [256, 512] -> ['len_0_256', 'len_256_512', 'len_512_inf']."""
    lows = [0, *edges]
    highs = [*(str(e) for e in edges), "inf"]
    return [f"len_{lo}_{hi}" for lo, hi in zip(lows, highs)]


def bin_index(lengths: torch.Tensor, edges: Sequence[int]) -> torch.Tensor:
    """Bin index in 0..K of each length: lengths (bs,) -> (bs,) long, with e_{k-1} < L <= e_k in bin k."""
    return torch.bucketize(lengths, _boundaries(tuple(edges), lengths.dtype, lengths.device), right=False)  # (bs,)


@functools.lru_cache(maxsize=64)
def _boundaries(edges: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(K,) edges on the device, built once per (edges, dtype, device): no host-to-device copy per call."""
    return torch.as_tensor(list(edges), dtype=dtype, device=device)  # (K,)


def per_bin_counts(
    lengths: torch.Tensor, valid: torch.Tensor, flagged: torch.Tensor, edges: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Count sequences and flagged (clipped/gated) sequences per length bin.

    Args:
        lengths: (bs,) response lengths L_i.
        valid: (bs,) bool, sequences that count (L_i > 0).
        flagged: (bs,) bool, sequences that were clipped or gated.
        edges: the K upper bin edges.

    Returns:
        (seqs, clipped): two (K+1,) float tensors of counts.
    """
    idx = bin_index(lengths, edges)  # (bs,)
    n_bins = len(edges) + 1
    seqs = torch.zeros(n_bins, dtype=torch.float32, device=lengths.device)  # (K+1,)
    seqs.index_add_(0, idx, valid.float())
    clipped = torch.zeros(n_bins, dtype=torch.float32, device=lengths.device)  # (K+1,)
    clipped.index_add_(0, idx, (valid & flagged).float())
    return seqs, clipped


def per_bin_sums(
    lengths: torch.Tensor,
    valid: torch.Tensor,
    flags: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    edges: Sequence[int],
) -> torch.Tensor:
    """One (K+1, 1 + F + V) table of per-bin sums, so that a caller reads every count with one host sync.

    Args:
        lengths: (bs,) response lengths L_i.
        valid: (bs,) bool, sequences that count (L_i > 0).
        flags: F (bs,) bool tensors; column 1 + f counts valid sequences with flags[f] set.
        values: V (bs,) float tensors summed per bin as they are (zero them on invalid rows yourself).
        edges: the K upper bin edges.

    Returns:
        (K+1, 1 + F + V), float32 (float64 if a value is float64): column 0 counts valid sequences per bin.
        Summing a column over the bins gives its total over the micro-batch.
    """
    dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
    valid_f = valid.to(dtype)  # (bs,)
    columns = [valid_f, *(valid_f * f for f in flags), *(v.to(dtype) for v in values)]  # each (bs,)
    data = torch.stack(columns, dim=-1)  # (bs, 1 + F + V)
    table = torch.zeros(len(edges) + 1, data.shape[-1], dtype=dtype, device=lengths.device)  # (K+1, 1 + F + V)
    return table.index_add_(0, bin_index(lengths, edges), data)  # (K+1, 1 + F + V)


def bin_metrics_from_table(prefix: str, rows: Sequence[Sequence[float]], edges: Sequence[int]) -> dict[str, float]:
    """``{prefix}/seqs_<bin>`` and ``{prefix}/clipped_<bin>`` from ``per_bin_sums(...).tolist()`` (columns 0, 1)."""
    out: dict[str, float] = {}
    for name, row in zip(bin_names(edges), rows):
        out[f"{prefix}/seqs_{name}"] = row[0]
        out[f"{prefix}/clipped_{name}"] = row[1]
    return out


def bin_metrics(
    prefix: str, lengths: torch.Tensor, valid: torch.Tensor, flagged: torch.Tensor, edges: Sequence[int]
) -> dict[str, float]:
    """``{prefix}/seqs_<bin>`` and ``{prefix}/clipped_<bin>`` counts for every bin (zeros included), one host sync."""
    with torch.no_grad():
        rows = per_bin_sums(lengths, valid, [flagged], [], edges).tolist()  # (K+1, 2)
    return bin_metrics_from_table(prefix, rows, edges)
