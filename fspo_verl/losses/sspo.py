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

from typing import Any

import torch
import torch.nn.functional as F

from fspo_verl.config import FSPOPolicyLossConfig
from fspo_verl.losses._sequence import MAX_LOG_RATIO, SequenceBatch, aggregate, loss_hparams, loss_metrics
from fspo_verl.registry_guard import register_policy_loss_once

#: relative gap between w_i/g(1) and GSPO's ratio above which a sequence counts as gated
GATED_TOLERANCE = 0.01


def log_gate(
    log_ratio: torch.Tensor, tau: torch.Tensor, gate: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """log g(r) per token and log g(1) per sequence.

    Args:
        log_ratio: (bs, T) clamped token log-ratios d.
        tau: (bs, 1) per-sequence temperature.
        gate: "sigmoid" | "arctan" | "identity".

    Returns:
        (log_g, log_g_at_1): (bs, T) and (bs,).
    """
    if gate == "identity":
        return log_ratio, torch.zeros_like(tau.squeeze(-1))  # (bs, T), (bs,)
    if gate == "sigmoid":
        ratio = torch.exp(log_ratio)  # (bs, T)
        log_g = F.logsigmoid(tau * (ratio - 1.0)) + torch.log(4.0 / tau)  # (bs, T), stable for any r >= 0
        return log_g, torch.log(2.0 / tau).squeeze(-1)  # g(1) = sigmoid(0)*4/tau = 2/tau
    if gate == "arctan":
        return torch.atan(tau * log_ratio) / tau, torch.zeros_like(tau.squeeze(-1))  # (bs, T), (bs,)
    raise ValueError(f"actor_rollout_ref.actor.policy_loss.sspo_gate={gate!r} is invalid: use sigmoid, arctan or identity")


def sspo_log_weight(batch: SequenceBatch, hp: FSPOPolicyLossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_i and the "gated" flag of every sequence of a micro-batch.

    The loss and the clip-rate diagnostics (``fspo_verl.diagnostics.clip_rates``) both call this, so "gated" in a
    diagnostic means exactly what the loss reports.

    Args:
        batch: the micro-batch; uses ``log_ratio`` (bs, T), ``mask`` (bs, T), ``lengths`` (bs,) and
            ``advantages`` (bs,) (its sign picks tau).
        hp: ``sspo_gate``, ``sspo_tau_pos`` and ``sspo_tau_neg``.

    Returns:
        (log_w, gated), both (bs,): log_w_i = (1/L_i) sum_t log g(r_{i,t}) (differentiable), and
        gated_i = |w_i / g(1) / exp((1/L_i) sum_t d_{i,t}) - 1| > GATED_TOLERANCE (no gradient).
    """
    safe_len = batch.lengths.clamp(min=1.0)  # (bs,)
    log_ratio = batch.log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # (bs, T)
    tau = torch.where(
        batch.advantages > 0,
        torch.tensor(hp.sspo_tau_pos, dtype=log_ratio.dtype, device=log_ratio.device),
        torch.tensor(hp.sspo_tau_neg, dtype=log_ratio.dtype, device=log_ratio.device),
    ).unsqueeze(-1)  # (bs, 1)
    log_g, log_g_at_1 = log_gate(log_ratio, tau, hp.sspo_gate)  # (bs, T), (bs,)
    log_w = (log_g * batch.mask).sum(dim=-1) / safe_len  # (bs,) mean over valid tokens

    with torch.no_grad():
        log_gspo_ratio = (log_ratio * batch.mask).sum(dim=-1) / safe_len  # (bs,)
        relative_gap = torch.expm1(log_w - log_g_at_1 - log_gspo_ratio).abs()  # (bs,) |w/g(1) / s - 1|
        gated = relative_gap > GATED_TOLERANCE  # (bs,)
    return log_w, gated


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
    adv = batch.advantages  # (bs,)
    log_w, gated = sspo_log_weight(batch, hp)  # (bs,), (bs,)
    seq_loss = -torch.exp(log_w) * adv  # (bs,)

    loss = aggregate(seq_loss, response_mask, loss_agg_mode, config, rollout_is_weights)
    metrics = loss_metrics("actor/sspo", batch, gated, gated & (adv <= 0), list(hp.length_bins))
    return loss, metrics

