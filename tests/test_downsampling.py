"""The down-sampling rules against brute force, a per-group loop and their documented contracts."""

from __future__ import annotations

import itertools

import pytest
import torch
from reference_impls import max_variance_per_group_loop

from fspo_verl.downsampling import rules as ds
from fspo_verl.downsampling.rules import (
    DOWNSAMPLERS,
    get_downsampler,
    register_downsampler,
    select_max_reward,
    select_max_variance,
    select_random,
    select_shortest,
    select_token_efficiency,
)


def _population_var(values: torch.Tensor) -> torch.Tensor:
    """(..., m) -> (...) variance with ddof=0, float64."""
    values = values.double()
    return ((values - values.mean(dim=-1, keepdim=True)) ** 2).mean(dim=-1)


def _brute_force_max_var(rewards: torch.Tensor, valid: torch.Tensor, m: int) -> torch.Tensor:
    """(B,) the largest variance over every m-subset of each row's valid entries."""
    best = []
    for row, mask in zip(rewards.double(), valid, strict=True):
        values = row[mask]  # (c,)
        combos = torch.tensor(list(itertools.combinations(range(values.numel()), m)))  # (C, m)
        best.append(_population_var(values[combos]).max())
    return torch.stack(best)


def _reward_cases(seed: int, rows: int, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "continuous": torch.randn(rows, n, generator=g, dtype=torch.float64),
        "binary": torch.randint(0, 2, (rows, n), generator=g).double(),
        "heavy_ties": torch.randint(0, 3, (rows, n), generator=g).double() * 0.5,
    }


def _assert_valid_selection(idx: torch.Tensor, valid: torch.Tensor, m: int) -> None:
    assert idx.shape == (valid.shape[0], m) and idx.dtype == torch.long
    assert bool((idx[:, 1:] > idx[:, :-1]).all()), "indices must be distinct and ascending"
    assert bool(valid.gather(1, idx).all()), "a rule picked an invalid slot"


@pytest.mark.parametrize("n", range(3, 13))
@pytest.mark.parametrize("case", ["continuous", "binary", "heavy_ties"])
def test_max_variance_equals_brute_force(n: int, case: str) -> None:
    rewards = _reward_cases(seed=n, rows=6, n=n)[case]
    valid = torch.ones_like(rewards, dtype=torch.bool)
    for m in range(2, n):
        idx = select_max_variance(rewards, m)
        _assert_valid_selection(idx, valid, m)
        chosen = _population_var(rewards.gather(1, idx))
        torch.testing.assert_close(chosen, _brute_force_max_var(rewards, valid, m), atol=1e-9, rtol=0)


@pytest.mark.parametrize("case", ["continuous", "binary", "heavy_ties"])
def test_max_variance_ragged_groups_equal_brute_force_on_valid_entries(case: str) -> None:
    n = 10
    rewards = _reward_cases(seed=7, rows=12, n=n)[case]
    g = torch.Generator().manual_seed(1)
    valid = torch.rand(12, n, generator=g) < 0.7
    valid[:, :4] = True  # every row has at least 4 real responses, scattered anywhere
    rewards = torch.where(valid, rewards, torch.full_like(rewards, float("nan")))  # padding may hold NaN
    for m in range(2, 5):
        idx = select_max_variance(rewards, m, valid)
        _assert_valid_selection(idx, valid, m)
        chosen = _population_var(rewards.gather(1, idx))
        torch.testing.assert_close(chosen, _brute_force_max_var(rewards, valid, m), atol=1e-9, rtol=0)


def test_max_variance_vectorised_equals_per_group_loop() -> None:
    g = torch.Generator().manual_seed(3)
    rewards = torch.rand(200, 16, generator=g, dtype=torch.float64)
    for m in (2, 4, 7, 15):
        assert torch.equal(select_max_variance(rewards, m), max_variance_per_group_loop(rewards, m))
    # with ties the subsets may differ between equally good choices; their variance may not
    ties = torch.randint(0, 2, (200, 16), generator=g).double()
    for m in (2, 5, 8):
        torch.testing.assert_close(
            _population_var(ties.gather(1, select_max_variance(ties, m))),
            _population_var(ties.gather(1, max_variance_per_group_loop(ties, m))),
            atol=1e-12,
            rtol=0,
        )


def test_max_variance_is_shift_invariant_for_large_offsets() -> None:
    """Centring before the prefix sums keeps the choice exact when rewards carry a big common offset."""
    g = torch.Generator().manual_seed(5)
    rewards = torch.rand(50, 12, generator=g, dtype=torch.float64)
    assert torch.equal(select_max_variance(rewards + 1e6, 4), select_max_variance(rewards, 4))


def test_max_variance_ties_break_deterministically() -> None:
    # all equal: every subset has variance 0, the smallest k (0) wins, so the m lowest indices are kept
    assert select_max_variance(torch.ones(1, 6), 3).tolist() == [[0, 1, 2]]
    # binary 0/1 with m=2: one 0 and one 1; the lowest-index 0 and the highest-index 1 (end of the stable sort)
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0]])
    assert select_max_variance(rewards, 2).tolist() == [[1, 4]]
    assert torch.equal(select_max_variance(rewards, 2), select_max_variance(rewards.clone(), 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 1}, r"m=1"),
        ({"m": 7}, r"m=7"),
        ({"m": 3, "valid": torch.tensor([[True, True, False, False, False, False]])}, "fewer than m=3"),
    ],
)
def test_max_variance_rejects_bad_m_and_short_rows(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_max_variance(torch.rand(1, 6), **kwargs)


def test_rules_reject_non_finite_valid_scores() -> None:
    rewards = torch.tensor([[0.0, float("nan"), 1.0, 2.0]])
    with pytest.raises(ValueError, match="non-finite"):
        select_max_variance(rewards, 2)
    with pytest.raises(ValueError, match="non-finite"):
        select_max_reward(rewards, 2)
    # the same NaN in a padding slot is fine
    valid = torch.tensor([[True, False, True, True]])
    assert select_max_reward(rewards, 2, valid).tolist() == [[2, 3]]


def test_max_reward_keeps_top_m_lower_index_on_ties() -> None:
    rewards = torch.tensor([[0.5, 1.0, 1.0, 0.0, 1.0], [3.0, 2.0, 1.0, 0.0, -1.0]])
    assert select_max_reward(rewards, 2).tolist() == [[1, 2], [0, 1]]
    valid = torch.tensor([[True, False, True, True, True], [False, True, True, True, True]])
    assert select_max_reward(rewards, 2, valid).tolist() == [[2, 4], [1, 2]]


def test_shortest_and_token_efficiency() -> None:
    lengths = torch.tensor([[10, 3, 7, 3, 50]])
    rewards = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0]])
    assert select_shortest(lengths, 2).tolist() == [[1, 3]]
    assert select_shortest(lengths, 3).tolist() == [[1, 2, 3]]
    # reward per token: 0.1, 0, 1/7, 1/3, 0.02
    assert select_token_efficiency(rewards, lengths, 2).tolist() == [[2, 3]]
    # an empty response counts as one token: 1/1 beats everything else
    assert select_token_efficiency(rewards, torch.tensor([[10, 3, 7, 3, 0]]), 1).tolist() == [[4]]


def test_random_is_valid_reproducible_and_uniform() -> None:
    n, m, draws = 6, 2, 3000
    valid = torch.tensor([[True, True, False, True, True, True]]).expand(draws, n)
    idx = select_random(torch.zeros(draws, n), m, valid, torch.Generator().manual_seed(0))
    _assert_valid_selection(idx, valid, m)
    again = select_random(torch.zeros(draws, n), m, valid, torch.Generator().manual_seed(0))
    other = select_random(torch.zeros(draws, n), m, valid, torch.Generator().manual_seed(1))
    assert torch.equal(idx, again) and not torch.equal(idx, other)
    # each of the 5 valid slots is kept with probability m/5 = 0.4 (binomial sd ~ 0.009 over 3000 draws)
    freq = torch.bincount(idx.flatten(), minlength=n).double() / draws
    assert freq[2] == 0
    torch.testing.assert_close(freq[valid[0]], torch.full((5,), 0.4, dtype=torch.float64), atol=0.05, rtol=0)


def test_registry_holds_every_rule_with_one_signature() -> None:
    assert {"max_variance", "max_reward", "random", "shortest", "token_efficiency"} <= set(DOWNSAMPLERS)
    rewards = torch.tensor([[0.0, 1.0, 0.2, 0.9]])
    lengths = torch.tensor([[5, 9, 1, 2]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    got = {name: get_downsampler(name)(rewards, lengths, valid, 2, torch.Generator().manual_seed(0)) for name in DOWNSAMPLERS}
    assert got["max_variance"].tolist() == [[0, 1]]
    assert got["max_reward"].tolist() == [[1, 3]]
    assert got["shortest"].tolist() == [[2, 3]]
    assert got["token_efficiency"].tolist() == [[2, 3]]
    with pytest.raises(KeyError, match="unknown down-sampling rule 'nope'"):
        get_downsampler("nope")


def test_register_downsampler_adds_a_rule_and_refuses_a_foreign_clash() -> None:
    def longest(rewards, lengths, valid, m, generator):
        return ds._first_m(lengths.double(), valid, m, descending=True)

    register_downsampler("test_longest")(longest)
    try:
        idx = get_downsampler("test_longest")(torch.zeros(1, 3), torch.tensor([[1, 9, 5]]), torch.ones(1, 3, dtype=torch.bool), 1, None)
        assert idx.tolist() == [[1]]
        foreign = lambda *a: None  # noqa: E731
        foreign.__module__ = "someone_else"
        with pytest.raises(ValueError, match="already registered"):
            register_downsampler("test_longest")(foreign)
    finally:
        DOWNSAMPLERS.pop("test_longest", None)
