"""Length fairness under the CLT (arXiv 2509.09177's central claim), measured through the loss's own metrics.

Per-token log-ratios are iid N(0, sigma^2), lengths log-uniform on [32, 4096]. Then S_i ~ N(0, L_i sigma^2):
FSPO's sqrt(L) band clips every length bin at the same rate, while a fixed band on exp(S_i) (PPO/GRPO
style, here [0.8, 1.2]) clips long responses far more often than short ones.
"""

from __future__ import annotations

import math

import torch
from conftest import FSPO_TARGET, actor_config

from fspo_verl.losses.fspo import compute_policy_loss_fspo
from fspo_verl.losses.length_bins import bin_index, bin_names

SIGMA = 0.01  # per-token std; S_i/sqrt(L_i) ~ N(0, 1e-4) against c = 0.0096/0.0128: ~27% clipped
N_SEQS = 12_000
MAX_LEN = 4096
MICRO_BATCH = 1_000


def _simulate(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_len = torch.empty(N_SEQS).uniform_(math.log(32), math.log(MAX_LEN), generator=gen)
    lengths = log_len.exp().round().long().clamp(32, MAX_LEN)  # (N,)
    return lengths, gen


def test_fspo_clip_rate_is_flat_and_a_fixed_band_is_not():
    config = actor_config([FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo"])
    edges = config.policy_loss.length_bins
    lengths, gen = _simulate()
    sums: dict[str, float] = {}
    seq_log_ratios = []
    for start in range(0, N_SEQS, MICRO_BATCH):
        lens = lengths[start : start + MICRO_BATCH]  # (mb,)
        mask = torch.arange(MAX_LEN)[None, :] < lens[:, None]  # (mb, T)
        d = torch.randn(len(lens), MAX_LEN, generator=gen) * SIGMA  # (mb, T)
        old = torch.full_like(d, -1.0)
        adv = torch.where(torch.rand(len(lens), 1, generator=gen) < 0.5, -1.0, 1.0).expand_as(d)  # (mb, T)
        _, metrics = compute_policy_loss_fspo(old, old + d, adv, mask, "seq-mean-token-mean", config)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        seq_log_ratios.append((d * mask).sum(-1))
    # the exact per-bin rate is the ratio of the summed (equivalently, averaged) counts
    names = [n for n in bin_names(edges) if sums[f"actor/fspo/seqs_{n}"] > 0]
    fspo_rates = {n: sums[f"actor/fspo/clipped_{n}"] / sums[f"actor/fspo/seqs_{n}"] for n in names}
    assert min(sums[f"actor/fspo/seqs_{n}"] for n in names) >= 1_000
    assert max(fspo_rates.values()) - min(fspo_rates.values()) <= 0.05, fspo_rates
    # and the common rate is the Gaussian one: P(Z < -0.96) + P(Z > 1.28) = 0.2688
    assert all(abs(r - 0.2688) < 0.03 for r in fspo_rates.values()), fspo_rates

    s = torch.cat(seq_log_ratios)  # (N,) S_i
    fixed = (s < math.log(0.8)) | (s > math.log(1.2))  # (N,) PPO-style band on exp(S_i)
    idx = bin_index(lengths.float(), edges)  # (N,)
    shortest, longest = idx.min().item(), idx.max().item()
    fixed_short = fixed[idx == shortest].float().mean().item()
    fixed_long = fixed[idx == longest].float().mean().item()
    assert fixed_long >= 5 * fixed_short and fixed_long > 0.3, (fixed_short, fixed_long)
