"""Per-sequence "clipped" indicators for every policy loss the length-fairness diagnostics compare.

Each indicator takes the tensors a verl policy loss sees, ``old_log_prob``, ``log_prob``, ``advantages``
and ``response_mask`` (all (bs, T)) and the actor config, and returns a (bs,) bool tensor: True where
that loss's trust region removes (hard clip) or reshapes (soft gate) the sequence's update. "Clipped" is
defined by where the ratio lies, independently of the sign of A_i, so that one number per length bin
compares methods; this is the rate of sequences OUTSIDE the trust region, which for hard clips is an upper
bound on the rate where clipping actually binds (binding also needs the matching sign of A_i).

With d_{i,t} = log_prob - old_log_prob on response tokens, L_i = sum_t mask and S_i = sum_t d_{i,t}:

    ppo_seq   exp(S_i) outside [1 - clip_ratio_low, 1 + clip_ratio_high]: a fixed PPO band on the
              sequence ratio (the "fixed band" of FSPO's analysis, arXiv 2509.09177; not a verl loss).
    vanilla   at least one token with exp(clamp(d, -20, 20)) outside [1 - clip_ratio_low, 1 + clip_ratio_high]
              (verl's token-level PPO clip: at least one token of the sequence loses its gradient).
    gspo      exp(min(S_i / L_i, 10)) outside [1 - clip_ratio_low, 1 + clip_ratio_high] (arXiv 2507.18071;
              verl clips every token of the sequence with this one ratio, so the whole sequence is clipped).
    geo_mean  at least one token with d outside [-clip_ratio_low, clip_ratio_high] (GMPO, arXiv 2507.20673;
              verl clips in log space; this is the token set verl's own ``pg_clipfrac`` counts).
    cispo     at least one token whose importance weight exp(clamp(d, -20, 20)) verl clips to
              [1 - clip_ratio_low, 1 + clip_ratio_high] (CISPO, arXiv 2506.13585: the weight is clipped and
              detached, so the token's update is scaled down; this is the token set verl's ``pg_clipfrac``
              counts, whatever the sign of A). Same test as ``vanilla``, read as a weight clip.
    sapo      at least one token whose gate removes more than 1% of its gradient: SAPO's token loss
              -A*g(r) with g(r) = sigmoid(tau*(r-1))*4/tau has gradient -A*g'(r)*r*grad log pi, PPO's
              unclipped one -A*r*grad log pi, so the gate scales the token's gradient by
              g'(r) = 4*sigmoid(x)*(1-sigmoid(x)), x = tau*(r-1), tau = tau_pos if A > 0 else tau_neg
              (arXiv 2511.20347); gated means 1 - g'(r) > GATED_TOLERANCE (0.01, SSPO's tolerance). SAPO
              never zeroes a gradient; this is our choice of a comparable event (|r-1| > ~0.2 at tau=1,
              close to PPO's 0.2 band).
    fspo      S_i outside [L_i*mu - c_low*sqrt(L_i), L_i*mu + c_high*sqrt(L_i)]: computed by
              ``fspo_verl.losses.fspo.fspo_band``, the function the loss itself calls.
    sspo      w_i/g(1) differs from GSPO's exp(S_i/L_i) by more than 1%: computed by
              ``fspo_verl.losses.sspo.sspo_log_weight``, the function the loss itself calls.

Config: ``clip_ratio_low``/``clip_ratio_high``/``tau_pos``/``tau_neg`` are read from the actor config as
verl's losses read them; ``fspo``/``sspo`` read ``config.policy_loss`` (an ``FSPOPolicyLossConfig``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fspo_verl.losses._sequence import MAX_LOG_RATIO, SequenceBatch, loss_hparams
from fspo_verl.losses.fspo import fspo_band, outside_fspo_band
from fspo_verl.losses.sspo import GATED_TOLERANCE, sspo_log_weight

#: GSPO's clamp on the log sequence ratio in verl's implementation
GSPO_MAX_LOG_RATIO = 10.0

ClipIndicator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]


def _clip_ratios(config: Any) -> tuple[float, float]:
    """(clip_ratio_low, clip_ratio_high), with verl's fallback to clip_ratio."""
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return float(low), float(high)


def _band(config: Any) -> tuple[float, float]:
    """The ratio band (1 - clip_ratio_low, 1 + clip_ratio_high)."""
    low, high = _clip_ratios(config)
    return 1.0 - low, 1.0 + high


def _any_token(flags: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """(bs, T) token flags -> (bs,) bool: any flagged response token."""
    return (flags & batch.mask_bool).any(dim=-1)  # (bs,)


def ppo_seq_clipped(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    lo, hi = _band(config)
    ratio = batch.log_ratio.sum(dim=-1).clamp(max=MAX_LOG_RATIO).exp()  # (bs,) exp(S_i)
    return (ratio < lo) | (ratio > hi)  # (bs,)


def vanilla_clipped(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    lo, hi = _band(config)
    ratio = batch.log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # (bs, T)
    return _any_token((ratio < lo) | (ratio > hi), batch)  # (bs,)


def cispo_clipped(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    # CISPO clips the detached IS weight with PPO's band: the same per-token test as ``vanilla``
    return vanilla_clipped(old_log_prob, log_prob, advantages, response_mask, config)  # (bs,)


def gspo_clipped(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    lo, hi = _band(config)
    mean_log_ratio = batch.log_ratio.sum(dim=-1) / batch.lengths.clamp(min=1.0)  # (bs,) S_i / L_i
    ratio = mean_log_ratio.clamp(max=GSPO_MAX_LOG_RATIO).exp()  # (bs,)
    return (ratio < lo) | (ratio > hi)  # (bs,)


def geo_mean_clipped(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    low, high = _clip_ratios(config)
    d = batch.log_ratio  # (bs, T)
    return _any_token((d < -low) | (d > high), batch)  # (bs,) d outside [-low, high]


def sapo_gated(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    d = batch.log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # (bs, T)
    tau = torch.where(advantages > 0, float(config.tau_pos), float(config.tau_neg)).to(d.dtype)  # (bs, T)
    gate = torch.sigmoid(tau * torch.expm1(d))  # (bs, T) sigmoid(tau*(r-1))
    grad_scale = 4.0 * gate * (1.0 - gate)  # (bs, T) g'(r)
    return _any_token(1.0 - grad_scale > GATED_TOLERANCE, batch)  # (bs,)


def fspo_clipped(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    seq_log_ratio, lo, hi = fspo_band(batch, loss_hparams(config, "fspo"))  # (bs,) each
    return outside_fspo_band(seq_log_ratio, lo, hi) & batch.valid  # (bs,)


def sspo_gated(old_log_prob, log_prob, advantages, response_mask, config) -> torch.Tensor:
    batch = SequenceBatch.from_tokens(old_log_prob, log_prob, advantages, response_mask)
    _, gated = sspo_log_weight(batch, loss_hparams(config, "sspo"))  # (bs,)
    return gated & batch.valid  # (bs,)


#: method name -> indicator; names of verl's built-in losses are spelled as in ``POLICY_LOSS_REGISTRY``
CLIP_INDICATORS: dict[str, ClipIndicator] = {
    "ppo_seq": ppo_seq_clipped,
    "vanilla": vanilla_clipped,
    "gspo": gspo_clipped,
    "geo_mean": geo_mean_clipped,
    "sapo": sapo_gated,
    "cispo": cispo_clipped,
    "fspo": fspo_clipped,
    "sspo": sspo_gated,
}


def sequence_clipped(
    method: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any,
) -> torch.Tensor:
    """(bs,) bool: which sequences ``method``'s trust region clips or gates (see the module docstring)."""
    if method not in CLIP_INDICATORS:
        raise ValueError(f"unknown method {method!r}: choose from {', '.join(CLIP_INDICATORS)}")
    with torch.no_grad():
        return CLIP_INDICATORS[method](old_log_prob, log_prob, advantages, response_mask, config)
