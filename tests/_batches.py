"""Tiny hand-written micro-batches shared by the loss tests."""

from __future__ import annotations

import torch

PAD_GARBAGE = 7.0  # written into padded positions; a correct loss never reads it


def padded_batch(seqs: list[tuple[float, list[float]]], width: int, old: float = -1.5):
    """(old_log_prob, log_prob, advantages, response_mask) of shape (bs, width) from (A_i, [d_i1, ...]).

    log_prob = old + d on response tokens; padded positions hold garbage in both log-prob tensors so that a
    loss which forgets the mask gives a different answer.
    """
    bs = len(seqs)
    old_log_prob = torch.full((bs, width), old, dtype=torch.float64)
    log_prob = torch.full((bs, width), PAD_GARBAGE, dtype=torch.float64)
    advantages = torch.full((bs, width), PAD_GARBAGE, dtype=torch.float64)
    mask = torch.zeros((bs, width), dtype=torch.bool)
    for i, (adv, d) in enumerate(seqs):
        n = len(d)
        log_prob[i, :n] = old + torch.tensor(d, dtype=torch.float64)
        advantages[i, :n] = adv
        mask[i, :n] = True
    old_log_prob[~mask] = -PAD_GARBAGE
    return old_log_prob, log_prob.requires_grad_(True), advantages, mask
