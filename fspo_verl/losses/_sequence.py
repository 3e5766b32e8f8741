"""Shared pieces of the sequence-level policy losses: per-sequence statistics, hyperparameter lookup,
verl-compatible aggregation and the metric dict.

Every function takes verl's padded micro-batch tensors of shape (bs, T) with a response mask that may be
bool (verl's ``ppo_loss`` passes bool) or float.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss

from fspo_verl.losses.config import FSPOPolicyLossConfig
from fspo_verl.losses.length_bins import bin_metrics_from_table, per_bin_sums

logger = logging.getLogger(__name__)

#: exp() arguments are clamped to at most this value (e^20 ~ 4.9e8), as verl's own losses do.
MAX_LOG_RATIO = 20.0

_warned_defaults: set[str] = set()


def loss_hparams(config: Any, loss_mode: str) -> FSPOPolicyLossConfig:
    """The FSPO/SSPO constants from ``config.policy_loss``.

    When the user selected ``loss_mode=fspo|sspo`` without our ``_target_``, verl built a plain
    ``PolicyLossConfig``; no FSPO key can have been set then (Hydra rejects unknown keys), so the
    documented defaults apply. We say so once per process.
    """
    policy_loss = getattr(config, "policy_loss", None) if config is not None else None
    if isinstance(policy_loss, FSPOPolicyLossConfig):
        return policy_loss
    if loss_mode not in _warned_defaults:
        _warned_defaults.add(loss_mode)
        logger.warning(
            "loss_mode=%s runs with FSPOPolicyLossConfig defaults because "
            "actor_rollout_ref.actor.policy_loss._target_ is not fspo_verl.config.FSPOPolicyLossConfig; "
            "set it to change fspo_c_low/fspo_c_high/sspo_gate/... ",
            loss_mode,
        )
    return _DEFAULTS


_DEFAULTS = FSPOPolicyLossConfig()


@dataclass
class SequenceBatch:
    """Per-sequence view of a padded micro-batch.

    Attributes (bs = sequences in the micro-batch, T = padded response length):
        mask_bool: (bs, T) bool, True on response tokens.
        log_ratio: (bs, T) float, log_prob - old_log_prob, zero on padding (NaN/inf there cannot leak).
        lengths: (bs,) float, L_i = sum_t mask.
        safe_lengths: (bs,) float, max(L_i, 1): the divisor of every per-sequence mean.
        valid: (bs,) bool, L_i > 0. Rows with L_i = 0 contribute nothing to loss or metrics.
        advantages: (bs,) float, A_i = masked mean of the token advantages (0 for empty rows), no gradient.

    ``from_tokens`` dispatches few aten ops on purpose: on a GPU each op is a kernel launch, and a loss over a
    micro-batch costs launches rather than memory traffic (``fspo_verl.diagnostics.op_count``).
    """

    mask_bool: torch.Tensor
    log_ratio: torch.Tensor
    lengths: torch.Tensor
    safe_lengths: torch.Tensor
    valid: torch.Tensor
    advantages: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(bs, T) float in the log-ratio's dtype, 1 on response tokens (built on demand: one op)."""
        return self.mask_bool.to(self.log_ratio.dtype)  # (bs, T)

    @classmethod
    def from_tokens(
        cls,
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> SequenceBatch:
        mask_bool = response_mask if response_mask.dtype == torch.bool else response_mask.bool()  # (bs, T)
        padding = ~mask_bool  # (bs, T)
        log_ratio = (log_prob - old_log_prob).masked_fill(padding, 0.0)  # (bs, T)
        lengths = mask_bool.sum(dim=-1, dtype=log_prob.dtype)  # (bs,)
        safe_lengths = lengths.clamp(min=1.0)  # (bs,)
        with torch.no_grad():
            seq_adv = advantages.masked_fill(padding, 0.0).sum(dim=-1) / safe_lengths  # (bs,)
        return cls(
            mask_bool=mask_bool,
            log_ratio=log_ratio,
            lengths=lengths,
            safe_lengths=safe_lengths,
            valid=lengths > 0,  # (bs,)
            advantages=seq_adv,
        )


#: the keys of verl's ``global_batch_info`` that ``agg_loss`` takes
_AGG_KEYS = frozenset({"dp_size", "batch_num_tokens", "global_batch_size", "loss_scale_factor"})


def aggregate(
    seq_loss: torch.Tensor,
    batch: SequenceBatch,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: torch.Tensor | None,
) -> torch.Tensor:
    """verl's ``agg_loss`` of the per-sequence losses (bs,) broadcast over their tokens.

    Passing ``config.global_batch_info`` (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)
    makes the result invariant to micro-batching and data parallelism, exactly as verl's ``vanilla`` loss.
    Without it (a single process), the local denominators are those ``agg_loss`` would count, floored at 1:
    an all-padding micro-batch then gives an exact zero that keeps the graph instead of 0/0, with no host
    sync to test for it.

    With no rollout-correction weights the token matrix l_{i,t} = l_i is never built: its sums are written
    per sequence (``seq_loss`` is 0 on empty rows, as A_i = 0 there), N = batch_num_tokens, G =
    global_batch_size, D = dp_size:

        token-mean               sum_i l_i L_i / N * D
        token-sum                sum_i l_i L_i * D
        seq-mean-token-sum       sum_i l_i L_i / G * D            (-norm: further / loss_scale_factor, default T)
        seq-mean-token-mean      sum_i l_i / G * D                (verl's L_i / (L_i + 1e-8) is 1 in float32)

    the same value as ``agg_loss`` up to rounding (tested against it), and the same gradient on every token,
    in a few (bs,)-sized kernels (an empty row's l_i gets a gradient here, but none of its tokens is a response
    token, so nothing reaches log_prob). With weights, ``agg_loss`` itself runs on the broadcast (bs, T) matrix.
    """
    info = dict(getattr(config, "global_batch_info", None) or {})
    dp_size = info.get("dp_size", 1)
    if dp_size <= 1:  # agg_loss's own local denominators, floored at 1
        if loss_agg_mode == "token-mean" and info.get("batch_num_tokens") is None:
            info["batch_num_tokens"] = batch.mask_bool.sum().clamp(min=1)  # () local token count
        elif loss_agg_mode.startswith("seq-mean") and info.get("global_batch_size") is None:
            info["global_batch_size"] = batch.valid.sum().clamp(min=1)  # () local non-empty sequences
    if rollout_is_weights is not None or not info.keys() <= _AGG_KEYS:
        loss_mat = seq_loss.unsqueeze(-1).expand(batch.mask_bool.shape)  # (bs, T), a view
        if rollout_is_weights is not None:
            loss_mat = loss_mat * rollout_is_weights  # (bs, T)
        return agg_loss(loss_mat=loss_mat, loss_mask=batch.mask_bool, loss_agg_mode=loss_agg_mode, **info)
    needs = {"token-mean": "batch_num_tokens", "token-sum": None}.get(loss_agg_mode, "global_batch_size")
    if needs is not None and info.get(needs) is None:  # only with dp_size > 1, as in agg_loss
        raise ValueError(f"(global) {needs} is required when dp_size > 1")
    if loss_agg_mode == "seq-mean-token-mean":
        loss = seq_loss.sum() / info["global_batch_size"]  # ()
    elif loss_agg_mode in ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        loss = (seq_loss * batch.lengths).sum()  # () sum over tokens of l_i
        if loss_agg_mode == "token-mean":
            loss = loss / info["batch_num_tokens"]  # ()
        elif loss_agg_mode.startswith("seq-mean"):
            loss = loss / info["global_batch_size"]  # ()
    else:
        raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode}")
    if dp_size != 1:
        loss = loss * dp_size  # ()
    if loss_agg_mode == "seq-mean-token-sum-norm":
        scale = info.get("loss_scale_factor")
        loss = loss / (batch.mask_bool.shape[-1] if scale is None else scale)  # ()
    return loss


def loss_metrics(
    prefix: str,
    batch: SequenceBatch,
    clipped: torch.Tensor,
    clipped_lower: torch.Tensor,
    edges: list[int],
    seq_log_ratio: torch.Tensor | None = None,
) -> dict[str, float]:
    """The metric dict every micro-batch emits, with the same keys every time, from ONE host sync.

    actor/pg_clipfrac = #(clipped & valid) / max(#valid, 1), actor/pg_clipfrac_lower likewise, actor/ppo_kl =
    -sum_{i,t} d_{i,t} / max(sum_i L_i, 1) (verl's masked mean of old - new), and the per-bin counts of
    ``fspo_verl.losses.length_bins``. Every sum comes from one per-bin table (each valid sequence is in
    exactly one bin), read with one ``tolist``.

    Args:
        clipped, clipped_lower: (bs,) bool.
        seq_log_ratio: (bs,) S_i = sum_t d_{i,t} when the caller has it; summed here otherwise.
    """
    with torch.no_grad():
        if seq_log_ratio is None:
            seq_log_ratio = batch.log_ratio.sum(dim=-1)  # (bs,)
        table = per_bin_sums(
            batch.lengths, batch.valid, [clipped, clipped_lower], [seq_log_ratio, batch.lengths], edges
        )  # (K+1, 5): valid, clipped, clipped_lower, sum S_i, sum L_i
        rows = table.tolist()  # the one host sync
    n_valid, n_clipped, n_lower, sum_log_ratio, n_tokens = (sum(col) for col in zip(*rows))
    metrics = {
        "actor/pg_clipfrac": n_clipped / max(n_valid, 1.0),
        "actor/pg_clipfrac_lower": n_lower / max(n_valid, 1.0),
        "actor/ppo_kl": -sum_log_ratio / max(n_tokens, 1.0),
    }
    metrics.update(bin_metrics_from_table(prefix, rows, edges))
    return metrics
