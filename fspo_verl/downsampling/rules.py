"""Rollout down-sampling rules: keep m of the n responses generated for each prompt.

PODS (arXiv 2504.13818, "Not All Rollouts are Useful") generates n rollouts per prompt and trains on the
m < n whose rewards have the largest variance; GFPO (arXiv 2508.09726, "Sample More to Think Less") runs
the same step with other scores (shortest response, reward per token). Every rule here is a pure tensor
function, vectorised over prompts (no Python loop over groups), and returns the kept indices.

Input contract, shared by every rule (B prompts, n = the widest group):
    rewards: (B, n) float. Response i's sequence score r_i: the sum of its token-level scores
        (``rm_scores``). Invalid slots may hold anything, NaN included.
    lengths: (B, n) int or float. Response i's length L_i in tokens (``response_mask`` sum).
    valid:   (B, n) bool, optional (default: all True). Ragged groups, where a prompt has fewer than n
        finished responses, are given by padding each row to n and marking the real entries True. The
        valid entries need not be contiguous. Every row must have at least m valid entries; the caller
        keeps a group with c <= m responses whole (``fspo_verl.downsampling.replay_buffer`` does).
    m: responses to keep per prompt, 1 <= m <= n (m >= 2 for max-variance).

Output: (B, m) long tensor of column indices into the (B, n) inputs, all valid, distinct within a row,
sorted ascending. Every rule is deterministic for a given input (``select_random`` for a given
generator state); ties between equal scores go to the lower index (stable sort).

Registry: ``DOWNSAMPLERS[name](rewards, lengths, valid, m, generator)`` -> (B, m). Add a rule with
``@register_downsampler("name")`` and select it with ``sampler_kwargs.rule=name``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: rule signature stored in the registry: (rewards, lengths, valid, m, generator) -> LongTensor (B, m)
DownsampleRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, "torch.Generator | None"], torch.Tensor]

#: rule name -> rule; read by ``fspo_verl.downsampling.replay_buffer`` and checked by ``fspo-verl doctor``
DOWNSAMPLERS: dict[str, DownsampleRule] = {}


def register_downsampler(name: str) -> Callable[[DownsampleRule], DownsampleRule]:
    """Register ``fn(rewards, lengths, valid, m, generator) -> LongTensor (B, m)`` under ``name``.

    Re-registering a name from the same module (a reload) replaces it; a clash with another module raises.
    """

    def decorator(fn: DownsampleRule) -> DownsampleRule:
        existing = DOWNSAMPLERS.get(name)
        if existing is not None and existing.__module__ != fn.__module__:
            raise ValueError(
                f"down-sampling rule {name!r} is already registered by {existing.__module__}; pick another name"
            )
        DOWNSAMPLERS[name] = fn
        return fn

    return decorator


def get_downsampler(name: str) -> DownsampleRule:
    if name not in DOWNSAMPLERS:
        raise KeyError(f"unknown down-sampling rule {name!r}; registered rules: {sorted(DOWNSAMPLERS)}")
    return DOWNSAMPLERS[name]


def _check_inputs(scores: torch.Tensor, valid: torch.Tensor | None, m: int, min_keep: int = 1) -> torch.Tensor:
    """Validate shapes, m and finiteness; return the (B, n) bool validity mask."""
    if scores.dim() != 2:
        raise ValueError(f"expected a (B, n) tensor of per-response scores, got shape {tuple(scores.shape)}")
    n = scores.shape[1]
    if not isinstance(m, int) or not min_keep <= m <= n:
        raise ValueError(f"m={m!r} responses to keep must be an integer in [{min_keep}, n={n}]")
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)  # (B, n)
    elif valid.shape != scores.shape or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor of shape {tuple(scores.shape)}, got {valid.dtype} {tuple(valid.shape)}")
    counts = valid.sum(dim=1)  # (B,)
    if bool((counts < m).any()):
        row = int(torch.nonzero(counts < m)[0, 0])
        raise ValueError(
            f"prompt row {row} has {int(counts[row])} valid responses, fewer than m={m}; keep such groups whole "
            "instead of passing them to a down-sampling rule"
        )
    if not bool(torch.isfinite(scores[valid]).all()):
        raise ValueError("a valid response has a non-finite score (NaN or inf); fix the reward function")
    return valid


def _first_m(key: torch.Tensor, valid: torch.Tensor, m: int, descending: bool) -> torch.Tensor:
    """Indices of the m best valid entries per row by ``key``; ties to the lower index.

    Args:
        key: (B, n) float scores; valid: (B, n) bool.

    Returns:
        (B, m) long, ascending within each row.
    """
    worst = -torch.inf if descending else torch.inf
    key = torch.where(valid, key.to(torch.float64), torch.full_like(key, worst, dtype=torch.float64))  # (B, n)
    order = torch.sort(key, dim=1, descending=descending, stable=True).indices  # (B, n)
    return torch.sort(order[:, :m], dim=1).values  # (B, m)


def select_max_variance(rewards: torch.Tensor, m: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """PODS max-variance down-sampling (arXiv 2504.13818, Sec. 3 and its Theorem on the optimal subset).

    Returns per row the m-subset S maximising  Var(S) = (1/m) sum_{i in S} r_i^2 - ((1/m) sum_{i in S} r_i)^2.

    The optimum is always the k largest plus the m-k smallest rewards for some k in 0..m. With the valid
    rewards of a row sorted ascending, s_0 <= ... <= s_{c-1}, and prefix sums P_j = sum_{i<j} s_i,
    Q_j = sum_{i<j} s_i^2, the candidate k has
        S_k = P_{m-k} + P_c - P_{c-k},   Q_k = Q_{m-k} + Q_c - Q_{c-k},   m^2 Var_k = m Q_k - S_k^2,
    so one sort plus O(m) arithmetic scores every k: O(n log n) per prompt, all prompts at once.
    Rewards are centred per row before the prefix sums (variance is shift-invariant) and summed in
    float64, which keeps cancellation error near 1e-15 for rewards of order 1.

    Ties: the sort is stable (equal rewards keep index order; the m-k lowest take the lower indices, the k
    highest the higher ones), and among k with equal variance the smallest k wins (``argmax`` takes the
    first maximum).

    Args:
        rewards: (B, n) float sequence scores.
        m: responses to keep, 2 <= m <= n (a single response has no variance to maximise).
        valid: (B, n) bool mask of real responses; see the module docstring for ragged groups.

    Returns:
        (B, m) long indices, ascending within each row.
    """
    valid = _check_inputs(rewards, valid, m, min_keep=2)
    r = torch.where(valid, rewards.to(torch.float64), torch.zeros((), dtype=torch.float64))  # (B, n)
    counts = valid.sum(dim=1, keepdim=True)  # (B, 1) c
    centred = torch.where(valid, r - r.sum(dim=1, keepdim=True) / counts, torch.zeros_like(r))  # (B, n)
    sort_key = torch.where(valid, centred, torch.full_like(centred, torch.inf))  # (B, n) invalid slots last
    order = torch.sort(sort_key, dim=1, stable=True).indices  # (B, n)
    s = centred.gather(1, order)  # (B, n) ascending valid values, then zeros
    zero = torch.zeros_like(s[:, :1])  # (B, 1)
    p = torch.cat([zero, s.cumsum(dim=1)], dim=1)  # (B, n+1) P_j
    q = torch.cat([zero, (s * s).cumsum(dim=1)], dim=1)  # (B, n+1) Q_j

    k = torch.arange(m + 1, device=rewards.device)  # (m+1,) candidates: k taken from the top
    low_end = (m - k).expand(r.shape[0], -1)  # (B, m+1) m-k
    high_start = counts - k  # (B, m+1) c-k
    p_c, q_c = p.gather(1, counts), q.gather(1, counts)  # (B, 1) each
    sums = p.gather(1, low_end) + p_c - p.gather(1, high_start)  # (B, m+1) S_k
    squares = q.gather(1, low_end) + q_c - q.gather(1, high_start)  # (B, m+1) Q_k
    best_k = torch.argmax(m * squares - sums * sums, dim=1, keepdim=True)  # (B, 1)

    j = torch.arange(m, device=rewards.device).unsqueeze(0)  # (1, m) slot in the kept set
    # slots j < m-k take sorted positions j (the lowest); the rest take c-m+j (the k highest)
    positions = torch.where(j < m - best_k, j, counts - m + j)  # (B, m)
    return torch.sort(order.gather(1, positions), dim=1).values  # (B, m)


def select_max_reward(rewards: torch.Tensor, m: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Top-m by reward: the PODS paper's max-reward baseline. Returns (B, m) long indices."""
    valid = _check_inputs(rewards, valid, m)
    return _first_m(rewards, valid, m, descending=True)


def select_random(
    rewards: torch.Tensor, m: int, valid: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """m valid responses uniformly at random per prompt: the PODS paper's random baseline.

    ``rewards`` gives only the shape (it is not checked for finiteness). Pass a seeded ``generator`` for
    reproducible selections. Returns (B, m) long indices.
    """
    valid = _check_inputs(torch.zeros_like(rewards, dtype=torch.float32), valid, m)
    noise = torch.rand(rewards.shape, generator=generator, device=rewards.device)  # (B, n) i.i.d. U(0, 1)
    return _first_m(noise, valid, m, descending=False)


def select_shortest(lengths: torch.Tensor, m: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """GFPO shortest-m (arXiv 2508.09726): the m responses with the fewest tokens. Returns (B, m)."""
    valid = _check_inputs(lengths.to(torch.float64), valid, m)
    return _first_m(lengths, valid, m, descending=False)


def select_token_efficiency(
    rewards: torch.Tensor, lengths: torch.Tensor, m: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """GFPO token efficiency (arXiv 2508.09726): the m largest r_i / L_i.

    An empty response (L_i = 0) counts as one token, our choice, so that its score stays finite.
    Returns (B, m) long indices.
    """
    if lengths.shape != rewards.shape:
        raise ValueError(f"lengths {tuple(lengths.shape)} must match rewards {tuple(rewards.shape)}")
    efficiency = rewards.to(torch.float64) / lengths.to(torch.float64).clamp(min=1.0)  # (B, n)
    valid = _check_inputs(efficiency, valid, m)
    return _first_m(efficiency, valid, m, descending=True)


register_downsampler("max_variance")(lambda rewards, lengths, valid, m, generator: select_max_variance(rewards, m, valid))
register_downsampler("max_reward")(lambda rewards, lengths, valid, m, generator: select_max_reward(rewards, m, valid))
register_downsampler("random")(lambda rewards, lengths, valid, m, generator: select_random(rewards, m, valid, generator))
register_downsampler("shortest")(lambda rewards, lengths, valid, m, generator: select_shortest(lengths, m, valid))
register_downsampler("token_efficiency")(
    lambda rewards, lengths, valid, m, generator: select_token_efficiency(rewards, lengths, m, valid)
)

#: minimum m each built-in rule accepts (the driver-side config check reads it); other rules default to 1
MIN_KEEP: dict[str, int] = {"max_variance": 2}
