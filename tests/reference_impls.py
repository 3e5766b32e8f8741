"""Slow reference implementations the tests check the package against, and the benchmarks time it against.

They live here, not in the package: nothing in a run calls them. ``benchmarks/`` imports this module by
putting ``tests/`` on its path.
"""

from __future__ import annotations

import torch


def max_variance_per_group_loop(rewards: torch.Tensor, m: int) -> torch.Tensor:
    """Reference: the same max-variance selection as a Python loop over groups and k.

    Written the way the PODS paper's reference trainer does it (sort one group, build every
    "k highest + m-k lowest" candidate, take the variance of each).

    Args:
        rewards: (B, n) float, all valid.

    Returns:
        (B, m) long indices, ascending within each row.
    """
    out = []
    for row in rewards.to(torch.float64):  # (n,)
        order = torch.sort(row, stable=True).indices  # (n,)
        best, best_var = None, -1.0
        for k in range(m + 1):
            subset = torch.cat([order[: m - k], order[len(order) - k :]])  # (m,)
            var = float(row[subset].var(unbiased=False))
            if var > best_var:
                best, best_var = subset, var
        out.append(torch.sort(best).values)
    return torch.stack(out)  # (B, m)
