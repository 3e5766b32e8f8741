"""FSPO with a band fitted to the data: length-fair sequence clipping at a target rate (arXiv 2509.09177).

FSPO's band (``fspo_verl.losses.fspo``) has half-width c*sqrt(L_i): length-fair when Var(S_i | L_i) grows as
L_i, as the CLT for iid token log-ratios says. ``fspo_adaptive`` keeps FSPO's objective and centre and sets
the half-width from the measured spread of S_i at each length, so that every length clips at the rate p:

    S_i   = sum_t d_{i,t},   e_i = S_i - L_i*mu                 (mu as fspo_drift: 0, or the detached token mean)
    v(L)  = fitted E[e^2 | L]  (fspo_verl.losses.length_spread: running per-bin second moments, a*L^alpha
            fit with shrunk per-bin residuals, FSPO's band as the prior)
    s_k   = per-bin log-scale from the band's own clip counts (a rate tracker; 0 with fspo_adaptive_rate_gain=0)
    lo_i  = L_i*mu - z*exp(s_k)*sqrt(v(L_i)),   hi_i = L_i*mu + kappa*z*exp(s_k)*sqrt(v(L_i))
            z: Phi(-z) + Phi(-kappa*z) = p,  kappa = c_high/c_low
    l_i   = max(-A_i*exp(S_i), -A_i*exp(clip(S_i, lo_i, hi_i))), then verl's dual clip (as ``fspo``)

The statistics are updated with this micro-batch (detached) before its band is formed; an on-policy update
(S_i = 0) changes nothing. With v(L) = sigma^2*L the band is FSPO's at the constants that
``fspo-verl fairness calibrate`` gives for the rate p. Before any off-policy update the band IS FSPO's
(c_low, c_high). Loss aggregation (``loss_agg_mode``, verl's global batch info, ``rollout_is_weights``) is
``fspo``'s own (``fspo_verl.losses._sequence.aggregate``).

Flags (``actor_rollout_ref.actor.policy_loss.*``, ``fspo_verl.config.FSPOPolicyLossConfig``): loss_mode=
fspo_adaptive, fspo_target_clip_rate, fspo_c_low/fspo_c_high (the prior band and kappa), fspo_drift,
fspo_adaptive_memory, fspo_adaptive_prior_seqs, fspo_adaptive_prior_exponent, fspo_adaptive_rate_gain,
fspo_adaptive_onpolicy_tol,
fspo_adaptive_sync_ranks,
length_bins (also the estimator's bins).

Metrics: those of ``fspo`` under ``actor/fspo_adaptive/`` (seqs_len_*, clipped_len_*), and
    actor/fspo_adaptive/alpha        fitted length exponent of Var(S | L) (1 = FSPO's premise; 2*beta0 before data)
    actor/fspo_adaptive/stat_seqs    sequences in the running statistics (0 until the first off-policy update)
    actor/fspo_adaptive/scale_log_absmax   max over bins of |s_k|, the rate tracker's largest correction (log)
"""

from __future__ import annotations

from typing import Any

import torch

from fspo_verl.common.registry_guard import register_policy_loss_once
from fspo_verl.losses._sequence import SequenceBatch, loss_hparams
from fspo_verl.losses.fspo import band_policy_loss, fspo_band
from fspo_verl.losses.length_spread import SpreadSettings, estimator_for

PREFIX = "actor/fspo_adaptive"


def adaptive_band(batch: SequenceBatch, hp: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S_i and the adaptive band [lo_i, hi_i], each (bs,), after adding the micro-batch to the statistics.

    The loss and the clip-rate diagnostics share this, as ``fspo_band`` is shared for ``fspo``.
    """
    seq_log_ratio, fspo_lo, _ = fspo_band(batch, hp)  # (bs,) each
    lengths = batch.lengths  # (bs,)
    centre = (fspo_lo + hp.fspo_c_low * lengths.sqrt()).detach()  # (bs,) L_i*mu, the band's centre
    estimator = estimator_for(SpreadSettings.from_config(hp))
    estimator.update(lengths, seq_log_ratio.detach() - centre, batch.valid)
    low, high = estimator.half_widths(lengths)  # (bs,) each
    return seq_log_ratio, centre - low, centre + high


@register_policy_loss_once("fspo_adaptive")
def compute_policy_loss_fspo_adaptive(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "seq-mean-token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """fspo_adaptive policy loss on one padded micro-batch; all tensors (bs, T). Returns (loss, metrics)."""
    hp = loss_hparams(config, "fspo_adaptive")
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    loss, metrics = band_policy_loss(batch, *adaptive_band(batch, hp), PREFIX, hp, loss_agg_mode, config,
                                     rollout_is_weights)
    estimator = estimator_for(SpreadSettings.from_config(hp))
    _, alpha, _, _ = estimator.fit()
    metrics[f"{PREFIX}/alpha"] = alpha
    metrics[f"{PREFIX}/stat_seqs"] = sum(row[0] for row in estimator.stats)
    metrics[f"{PREFIX}/scale_log_absmax"] = max(abs(s) for s in estimator.log_scale)
    return loss, metrics
