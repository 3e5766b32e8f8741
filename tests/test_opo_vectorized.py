"""opo_vectorized against hand-computed values and verl's loop-based opo (arXiv 2505.23585)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from verl.trainer.ppo.core_algos import (
    compute_opo_outcome_advantage,
    get_adv_estimator_fn,
)

from fspo_verl.advantages.opo import compute_opo_vectorized_outcome_advantage, group_ids


def _batch(rewards, lengths, width=None):
    width = width or max(lengths) or 1
    bs = len(rewards)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()  # (bs, width)
    token_rewards = torch.zeros(bs, width)
    for i, (r, n) in enumerate(zip(rewards, lengths)):
        token_rewards[i, max(n - 1, 0)] = r  # outcome reward on the last response token
    return token_rewards, mask


def test_registered():
    assert get_adv_estimator_fn("opo_vectorized") is compute_opo_vectorized_outcome_advantage


def test_hand_computed():
    """Group "a": r = [1, 0, 1], L = [2, 4, 6] -> b = (2*1 + 4*0 + 6*1)/12 = 2/3, A = [1/3, -2/3, 1/3].
    Group "b" (interleaved): r = [0, 1], L = [1, 3] -> b = 3/4, A = [-3/4, 1/4].
    Group "c": a singleton, b = 0, A = r = 5."""
    rewards, lengths = [1, 0, 0, 1, 1, 5], [2, 1, 4, 3, 6, 2]
    index = np.array(["a", "b", "a", "b", "a", "c"], dtype=object)
    token_rewards, mask = _batch(rewards, lengths)
    adv, ret = compute_opo_vectorized_outcome_advantage(token_rewards, mask, index)
    expected = torch.tensor([1 / 3, -3 / 4, -2 / 3, 1 / 4, 1 / 3, 5.0])
    torch.testing.assert_close(adv, expected[:, None] * mask)
    assert torch.equal(adv, ret)


def test_integer_uids_and_tensor_uids_agree_with_strings():
    token_rewards, mask = _batch([1, 0, 0.5, 2], [3, 1, 2, 2])
    by_str = compute_opo_vectorized_outcome_advantage(token_rewards, mask, np.array(["x", "y", "x", "y"], dtype=object))[0]
    by_int = compute_opo_vectorized_outcome_advantage(token_rewards, mask, np.array([7, 3, 7, 3]))[0]
    by_tensor = compute_opo_vectorized_outcome_advantage(token_rewards, mask, torch.tensor([7, 3, 7, 3]))[0]
    assert torch.equal(by_str, by_int) and torch.equal(by_str, by_tensor)


def test_all_empty_group_has_zero_baseline_not_nan():
    token_rewards, mask = _batch([1.0, 2.0], [0, 0], width=3)
    adv, _ = compute_opo_vectorized_outcome_advantage(token_rewards, mask, np.array(["g", "g"], dtype=object))
    assert torch.isfinite(adv).all() and adv.abs().sum() == 0


def test_group_ids_dense_and_stable():
    ids, n = group_ids(np.array(["q", "p", "q", "r"], dtype=object))
    assert n == 3 and ids.tolist() == [0, 1, 0, 2]


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 5), st.floats(-3, 3, allow_nan=False, width=32), st.integers(1, 12)),
        min_size=1,
        max_size=40,
    ),
    as_str=st.booleans(),
)
def test_matches_verl_opo(data, as_str):
    """Arbitrary uid order, unequal group sizes and singletons: equal to verl's loop within 1e-6."""
    uids = [f"uid-{g}" if as_str else g for g, _, _ in data]
    index = np.array(uids, dtype=object)
    token_rewards, mask = _batch([r for _, r, _ in data], [n for _, _, n in data])
    ours, _ = compute_opo_vectorized_outcome_advantage(token_rewards.clone(), mask, index)
    ref, _ = compute_opo_outcome_advantage(token_rewards.clone(), mask, index)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
