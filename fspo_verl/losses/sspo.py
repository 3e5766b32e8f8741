"""SSPO: Soft Sequence Policy Optimisation (arXiv 2602.19327).

The sequence importance weight is the geometric mean of soft token gates g(r) on the token ratios
r_{i,t} = exp(d_{i,t}), d = log pi_theta - log pi_old clamped to [-20, 20]:

    w_i = exp( (1/L_i) * sum_t log g(r_{i,t}) )
    l_i = -w_i * A_i

l_i is broadcast over the sequence's tokens and reduced with verl's ``agg_loss`` and the global batch
info, as for FSPO. Gates (``sspo_gate``), with tau = sspo_tau_pos if A_i > 0 else sspo_tau_neg:

    sigmoid   g(r) = sigmoid(tau*(r-1)) * 4/tau        SAPO's gate; g(1) = 2/tau, g'(1) = 1
    arctan    g(r) = exp(arctan(tau*log r) / tau)      our design: g(1) = 1, g'(1) = 1, and
                                                       |log g| < pi/(2*tau), a soft per-token clip of the
                                                       log-ratio (the paper's exact gate family could not
                                                       be read; this one keeps GSPO's on-policy gradient)
    identity  g(r) = r                                  w_i = GSPO's sequence ratio exp(mean_t d)

Limiting cases (tested against verl): the identity gate equals verl's ``gspo`` with an unbinding clip
band and ``seq-mean-token-mean``; at r = 1 every gate gives GSPO's on-policy gradient
-A_i * (1/L_i) * sum_t grad log pi, because g'(1) = 1: grad w_i = w_i * (1/L_i) sum_t g'(1)/g(1) grad log pi,
and w_i = g(1) on-policy, so the g(1) factors cancel.

Metrics: as FSPO's, with "clipped" meaning GATED: a sequence is gated when w_i / g(1) differs from GSPO's
sequence ratio exp((1/L_i) sum_t d) by more than 1% (relative). ``actor/pg_clipfrac`` is the gated share,
``actor/pg_clipfrac_lower`` the share gated with A_i <= 0, and the bins are ``actor/sspo/seqs_len_*`` and
``actor/sspo/clipped_len_*``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from fspo_verl.common.registry_guard import register_policy_loss_once
from fspo_verl.losses._sequence import (
    MAX_LOG_RATIO,
    SequenceBatch,
    aggregate,
    loss_hparams,
    loss_metrics,
)
from fspo_verl.losses.config import FSPOPolicyLossConfig

#: relative gap between w_i/g(1) and GSPO's ratio above which a sequence counts as gated
GATED_TOLERANCE = 0.01


def log_gate(
    log_ratio: torch.Tensor, tau: torch.Tensor | None, gate: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log g(r) per token and log g(1) per sequence.

    Args:
        log_ratio: (bs, T) clamped token log-ratios d.
        tau: (bs, 1) per-sequence temperature (unused, may be None, for the identity gate).
        gate: "sigmoid" | "arctan" | "identity".

    Returns:
        (log_g, log_g_at_1): (bs, T) and (bs,); log_g_at_1 is None where log g(1) = 0 (identity, arctan).
    """
    if gate == "identity":
        return log_ratio, None  # (bs, T)
    if gate == "sigmoid":
        ratio = torch.exp(log_ratio)  # (bs, T)
        log_g = F.logsigmoid(tau * (ratio - 1.0)) + torch.log(4.0 / tau)  # (bs, T), stable for any r >= 0
        return log_g, torch.log(2.0 / tau).squeeze(-1)  # g(1) = sigmoid(0)*4/tau = 2/tau
    if gate == "arctan":
        return torch.atan(tau * log_ratio) / tau, None  # (bs, T)
    raise ValueError(f"actor_rollout_ref.actor.policy_loss.sspo_gate={gate!r} is invalid: use sigmoid, arctan or identity")


def sspo_log_weight(batch: SequenceBatch, hp: FSPOPolicyLossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_i and the "gated" flag of every sequence of a micro-batch.

    The loss and the clip-rate diagnostics (``fspo_verl.diagnostics.clip_rates``) both call this, so "gated" in a
    diagnostic means exactly what the loss reports.

    Args:
        batch: the micro-batch; uses ``log_ratio`` (bs, T), ``mask_bool`` (bs, T), ``safe_lengths`` (bs,) and
            ``advantages`` (bs,) (its sign picks tau).
        hp: ``sspo_gate``, ``sspo_tau_pos`` and ``sspo_tau_neg``.

    Returns:
        (log_w, gated), both (bs,): log_w_i = (1/L_i) sum_t log g(r_{i,t}) (differentiable), and
        gated_i = |w_i / g(1) / exp((1/L_i) sum_t d_{i,t}) - 1| > GATED_TOLERANCE (no gradient).
    """
    safe_len = batch.safe_lengths  # (bs,)
    log_ratio = batch.log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # (bs, T), zero on padding
    if hp.sspo_gate == "identity":
        tau = None  # unused: skip its kernels
    else:
        tau = torch.where(
            batch.advantages > 0, *_taus(hp.sspo_tau_pos, hp.sspo_tau_neg, log_ratio.dtype, log_ratio.device)
        ).unsqueeze(-1)  # (bs, 1)
    log_g, log_g_at_1 = log_gate(log_ratio, tau, hp.sspo_gate)  # (bs, T), (bs,) or None
    if hp.sspo_gate == "sigmoid":
        log_g = log_g.masked_fill(~batch.mask_bool, 0.0)  # (bs, T) log g(1) != 0 on padding
    # identity and arctan: log g(0) = 0 exactly, and d = 0 on padding, so padding adds nothing to the sum
    log_w = log_g.sum(dim=-1) / safe_len  # (bs,) mean over valid tokens

    with torch.no_grad():
        log_gspo_ratio = log_ratio.sum(dim=-1) / safe_len  # (bs,) d = 0 on padding
        gap = log_w - log_gspo_ratio if log_g_at_1 is None else log_w - log_g_at_1 - log_gspo_ratio  # (bs,)
        gated = torch.expm1(gap).abs() > GATED_TOLERANCE  # (bs,) |w/g(1) / s - 1| > tol
    return log_w, gated


@functools.lru_cache(maxsize=64)
def _taus(tau_pos: float, tau_neg: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """() tensors tau_pos and tau_neg on the device, built once: no host-to-device copy per call."""
    return (
        torch.tensor(tau_pos, dtype=dtype, device=device),  # ()
        torch.tensor(tau_neg, dtype=dtype, device=device),  # ()
    )


@register_policy_loss_once("sspo")
def compute_policy_loss_sspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "seq-mean-token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SSPO policy loss on one padded micro-batch; all tensors (bs, T). Returns (loss, metrics)."""
    hp = loss_hparams(config, "sspo")
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    adv = batch.advantages  # (bs,) no gradient
    log_w, gated = sspo_log_weight(batch, hp)  # (bs,), (bs,)
    seq_loss = torch.exp(log_w) * -adv  # (bs,)

    loss = aggregate(seq_loss, batch, loss_agg_mode, config, rollout_is_weights)
    with torch.no_grad():
        gated_lower = gated & (adv <= 0)  # (bs,)
    metrics = loss_metrics("actor/sspo", batch, gated, gated_lower, list(hp.length_bins))
    return loss, metrics
