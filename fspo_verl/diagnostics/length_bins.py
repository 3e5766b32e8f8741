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
    boundaries = torch.as_tensor(list(edges), dtype=lengths.dtype, device=lengths.device)  # (K,)
    return torch.bucketize(lengths, boundaries, right=False)  # (bs,)


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


def bin_metrics(
    prefix: str, lengths: torch.Tensor, valid: torch.Tensor, flagged: torch.Tensor, edges: Sequence[int]
) -> dict[str, float]:
    """``{prefix}/seqs_<bin>`` and ``{prefix}/clipped_<bin>`` counts for every bin (zeros included)."""
    seqs, clipped = per_bin_counts(lengths, valid, flagged, edges)
    out: dict[str, float] = {}
    for name, n, c in zip(bin_names(edges), seqs.tolist(), clipped.tolist()):
        out[f"{prefix}/seqs_{name}"] = n
        out[f"{prefix}/clipped_{name}"] = c
    return out
