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

from fspo_verl.config import FSPOPolicyLossConfig
from fspo_verl.diagnostics.length_bins import bin_metrics
from verl.trainer.ppo.core_algos import agg_loss

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
        mask: (bs, T) float, 1 on response tokens.
        log_ratio: (bs, T) float, log_prob - old_log_prob, zero on padding (NaN/inf there cannot leak).
        lengths: (bs,) float, L_i = sum_t mask.
        valid: (bs,) bool, L_i > 0. Rows with L_i = 0 contribute nothing to loss or metrics.
        advantages: (bs,) float, A_i = masked mean of the token advantages (0 for empty rows).
    """

    mask: torch.Tensor
    log_ratio: torch.Tensor
    lengths: torch.Tensor
    valid: torch.Tensor
    advantages: torch.Tensor

    @classmethod
    def from_tokens(
        cls,
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> "SequenceBatch":
        mask_bool = response_mask.bool()  # (bs, T)
        mask = mask_bool.to(log_prob.dtype)  # (bs, T)
        log_ratio = (log_prob - old_log_prob).masked_fill(~mask_bool, 0.0)  # (bs, T)
        lengths = mask.sum(dim=-1)  # (bs,)
        valid = lengths > 0  # (bs,)
        seq_adv = advantages.masked_fill(~mask_bool, 0.0).sum(dim=-1) / lengths.clamp(min=1.0)  # (bs,)
        return cls(mask=mask, log_ratio=log_ratio, lengths=lengths, valid=valid, advantages=seq_adv.detach())

    def fraction(self, flags: torch.Tensor) -> float:
        """Share of valid sequences with ``flags`` set; 0.0 for a micro-batch with no valid sequence."""
        n_valid = self.valid.sum().clamp(min=1)
        return ((flags & self.valid).sum() / n_valid).item()

    def ppo_kl(self) -> float:
        """verl's ``actor/ppo_kl``: masked mean over tokens of old_log_prob - log_prob; 0.0 when empty."""
        return (-self.log_ratio.sum() / self.mask.sum().clamp(min=1.0)).item()


def aggregate(
    seq_loss: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: torch.Tensor | None,
) -> torch.Tensor:
    """Broadcast per-sequence losses (bs,) over their tokens and reduce with verl's ``agg_loss``.

    Passing ``config.global_batch_info`` (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)
    makes the result invariant to micro-batching and data parallelism, exactly as verl's ``vanilla`` loss.
    """
    if not bool(response_mask.any()):
        # An all-padding micro-batch: agg_loss would divide 0 by a local count of 0 when no global
        # denominators are given. It contributes nothing, so return a zero that keeps the graph.
        return (seq_loss * 0.0).sum()
    loss_mat = seq_loss.unsqueeze(-1).expand(response_mask.shape)  # (bs, T), a view
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights  # (bs, T)
    global_batch_info = getattr(config, "global_batch_info", None) or {}
    return agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info)


def loss_metrics(
    prefix: str,
    batch: SequenceBatch,
    clipped: torch.Tensor,
    clipped_lower: torch.Tensor,
    edges: list[int],
) -> dict[str, float]:
    """The metric dict every micro-batch emits, with the same keys every time."""
    metrics = {
        "actor/pg_clipfrac": batch.fraction(clipped),
        "actor/pg_clipfrac_lower": batch.fraction(clipped_lower),
        "actor/ppo_kl": batch.ppo_kl(),
    }
    metrics.update(bin_metrics(prefix, batch.lengths, batch.valid, clipped, edges))
    return metrics
