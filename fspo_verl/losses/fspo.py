"""FSPO: length-fair sequence clipping with a sqrt(L) band (arXiv 2509.09177, "Clip Your Sequences Fairly").

For sequence i with L_i response tokens, token log-ratios d_{i,t} = log pi_theta - log pi_old and
sequence advantage A_i:

    S_i   = sum_t d_{i,t}                                   (a SUM, not GSPO's mean)
    lo_i  = L_i*mu - c_low  * sqrt(L_i)
    hi_i  = L_i*mu + c_high * sqrt(L_i)
    l_i   = max(-A_i*exp(S_i), -A_i*exp(clip(S_i, lo_i, hi_i)))
    l_i   = min(l_i, -A_i*clip_ratio_c)       if A_i < 0     (verl's dual clip, as in ``vanilla``)

Under a CLT, S_i ~ N(L_i*mu, L_i*sigma^2): a band whose half-width grows as sqrt(L_i) clips every length
with the same probability, where PPO's fixed band on exp(S_i) clips long responses most and GSPO's band on
exp(S_i/L_i) clips them least. l_i is broadcast over the sequence's tokens and reduced with verl's
``agg_loss`` and the global batch info. We recommend ``loss_agg_mode=seq-mean-token-mean`` (each sequence
counts once, as in the paper's sequence-level objective).

Flags (``actor_rollout_ref.actor.policy_loss.*``, see ``fspo_verl.config.FSPOPolicyLossConfig``):
    loss_mode=fspo, fspo_c_low, fspo_c_high, fspo_drift (mu = 0 for "none", the detached masked
    mean of d over the micro-batch for "kl"), length_bins. Also read: actor.clip_ratio_c.

Metrics:
    actor/pg_clipfrac         share of sequences with S_i outside [lo_i, hi_i]
    actor/pg_clipfrac_lower   share of sequences whose loss the dual clip capped (A_i < 0)
    actor/ppo_kl              masked token mean of old_log_prob - log_prob
    actor/fspo/seqs_len_<lo>_<hi>, actor/fspo/clipped_len_<lo>_<hi>
                              per length bin: sequences, and sequences outside the band
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fspo_verl.common.registry_guard import register_policy_loss_once
from fspo_verl.losses._sequence import (
    MAX_LOG_RATIO,
    SequenceBatch,
    aggregate,
    loss_hparams,
    loss_metrics,
)
from fspo_verl.losses.config import FSPOPolicyLossConfig


def fspo_band(batch: SequenceBatch, hp: FSPOPolicyLossConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S_i and FSPO's band [lo_i, hi_i] for every sequence of a micro-batch.

    The loss and the clip-rate diagnostics (``fspo_verl.diagnostics.clip_rates``) both call this, so "clipped" in a
    diagnostic means exactly what the loss does.

    Args:
        batch: the micro-batch; uses ``log_ratio`` (bs, T), ``lengths`` (bs,).
        hp: ``fspo_c_low``, ``fspo_c_high`` and ``fspo_drift``.

    Returns:
        (S, lo, hi), each (bs,): S_i = sum_t d_{i,t}, lo_i = L_i*mu - c_low*sqrt(L_i),
        hi_i = L_i*mu + c_high*sqrt(L_i).
    """
    lengths = batch.lengths  # (bs,)
    seq_log_ratio = batch.log_ratio.sum(dim=-1)  # (bs,) S_i
    half_width = lengths.sqrt()  # (bs,)
    if hp.fspo_drift == "kl":
        with torch.no_grad():
            mu = seq_log_ratio.sum() / lengths.sum().clamp(min=1.0)  # () per-token drift, detached
            center = lengths * mu  # (bs,)
        lo = center - hp.fspo_c_low * half_width  # (bs,)
        hi = center + hp.fspo_c_high * half_width  # (bs,)
    else:  # mu = 0
        lo = half_width * -hp.fspo_c_low  # (bs,)
        hi = half_width * hp.fspo_c_high  # (bs,)
    return seq_log_ratio, lo, hi


def outside_fspo_band(seq_log_ratio: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(bs,) bool: S_i outside [lo_i, hi_i], FSPO's meaning of "clipped" (independent of the sign of A_i)."""
    return (seq_log_ratio < lo) | (seq_log_ratio > hi)  # (bs,)


@register_policy_loss_once("fspo")
def compute_policy_loss_fspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "seq-mean-token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """FSPO policy loss on one padded micro-batch; all tensors (bs, T). Returns (loss, metrics)."""
    hp = loss_hparams(config, "fspo")
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    return band_policy_loss(batch, *fspo_band(batch, hp), "actor/fspo", hp, loss_agg_mode, config, rollout_is_weights)


def band_policy_loss(
    batch: SequenceBatch, seq_log_ratio: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, prefix: str,
    hp: FSPOPolicyLossConfig, loss_agg_mode: str, config: Any, rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, metrics) of a band-clipped sequence loss, given S_i and the band [lo_i, hi_i] (each (bs,)): the
    per-sequence loss of :func:`band_clipped_loss`, reduced by verl's aggregation, and the metric dict under
    ``prefix`` (shared by ``fspo`` and ``fspo_adaptive``, which differ only in their band)."""
    seq_loss, dual_clipped = band_clipped_loss(batch.advantages, seq_log_ratio, lo, hi, config)  # (bs,) each
    loss = aggregate(seq_loss, batch, loss_agg_mode, config, rollout_is_weights)
    with torch.no_grad():
        outside_band = outside_fspo_band(seq_log_ratio, lo, hi)  # (bs,)
    metrics = loss_metrics(prefix, batch, outside_band, dual_clipped, list(hp.length_bins), seq_log_ratio)
    return loss, metrics


def band_clipped_loss(
    adv: torch.Tensor, seq_log_ratio: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, config: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence loss l_i of the module docstring for any band [lo_i, hi_i]; all arguments (bs,), ``adv``
    without gradient.

    Computed as the equivalent one-exponent form (fewer kernels; same value, and the same gradient except on
    the measure-zero set where S_i sits exactly on an edge): -A*exp(x) is monotone in x, so PPO's pessimistic
    max picks x_i = min(S_i, hi_i) when A_i > 0 and x_i = max(S_i, lo_i) when A_i <= 0, and the dual clip
    caps the latter at log(clip_ratio_c). Both are capped at MAX_LOG_RATIO before exp.

    Returns (l_i, dual_clipped), each (bs,): the loss, and which sequences verl's dual clip capped.
    """
    clip_ratio_c = float(config.get("clip_ratio_c", 3.0)) if config is not None else 3.0
    positive = adv > 0  # (bs,)
    upper = torch.minimum(seq_log_ratio, hi)  # (bs,) A > 0: the band caps S from above
    lower = torch.maximum(seq_log_ratio, lo)  # (bs,) A <= 0: the band caps S from below
    cap_negative = min(math.log(clip_ratio_c), MAX_LOG_RATIO)  # dual clip: -A*exp(x) <= -A*clip_ratio_c
    exponent = torch.where(positive, upper, lower.clamp(max=cap_negative)).clamp(max=MAX_LOG_RATIO)  # (bs,)
    seq_loss = torch.exp(exponent) * -adv  # (bs,)
    with torch.no_grad():
        dual_clipped = (adv < 0) & (lower.clamp(max=MAX_LOG_RATIO) > math.log(clip_ratio_c))  # (bs,)
    return seq_loss, dual_clipped
