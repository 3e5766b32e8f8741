"""FSPO loss: hand-computed values, masking, dual clip, drift and metrics (arXiv 2509.09177)."""

from __future__ import annotations

import math

import pytest
import torch
from _batches import padded_batch
from conftest import FSPO_TARGET, actor_config

from fspo_verl.losses.fspo import compute_policy_loss_fspo
from verl.trainer.ppo.core_algos import get_policy_loss_fn

# Three sequences, c_low = c_high = 0.1, drift none, clip_ratio_c = 3:
#   seq 1: A=+1,   d=[.1,.1,.05,.05]  L=4  S=0.3   band [-0.2, 0.2]        -> above the band, clipped:
#          l = max(-e^0.3, -e^0.2) = -e^0.2 = -1.221402758, no gradient
#   seq 2: A=-0.5, d=[.1,-.2]         L=2  S=-0.1  band [-0.141421, 0.141421] -> inside:
#          l = 0.5*e^-0.1 = 0.452418709, dl/dS = 0.452418709
#   seq 3: A=-2,   d=[1,1,.5]         L=3  S=2.5   band [-0.173205, 0.173205] -> above the band, and
#          max(2e^2.5, 2e^0.173) = 24.364987921 exceeds the dual-clip cap -A*3 = 6: l = 6, no gradient
SEQS = [(1.0, [0.1, 0.1, 0.05, 0.05]), (-0.5, [0.1, -0.2]), (-2.0, [1.0, 1.0, 0.5])]
HAND_OVERRIDES = [
    FSPO_TARGET,
    "actor_rollout_ref.actor.policy_loss.loss_mode=fspo",
    "+actor_rollout_ref.actor.policy_loss.fspo_c_low=0.1",
    "+actor_rollout_ref.actor.policy_loss.fspo_c_high=0.1",
    "+actor_rollout_ref.actor.policy_loss.length_bins=[2,3]",
]


@pytest.fixture(scope="module")
def hand_config():
    return actor_config(HAND_OVERRIDES)


def test_registered_under_fspo():
    assert get_policy_loss_fn("fspo") is compute_policy_loss_fspo


def test_hand_computed_seq_mean_token_mean(hand_config):
    old, new, adv, mask = padded_batch(SEQS, width=5)
    loss, metrics = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", hand_config)
    # (-1.221402758 + 0.452418709 + 6) / 3
    assert loss.item() == pytest.approx(1.743671984, abs=1e-9)
    loss.backward()
    expected_grad = torch.zeros(3, 5, dtype=torch.float64)
    expected_grad[1, :2] = 0.150806236  # dl_2/dS / 3 on each of seq 2's tokens
    torch.testing.assert_close(new.grad, expected_grad, atol=1e-9, rtol=0)

    assert metrics["actor/pg_clipfrac"] == pytest.approx(2 / 3)  # seqs 1 and 3 outside the band
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(1 / 3)  # seq 3 capped by the dual clip
    # ppo_kl = -(0.3 - 0.1 + 2.5) / 9 tokens
    assert metrics["actor/ppo_kl"] == pytest.approx(-0.3, abs=1e-9)
    # bins (edges [2, 3]): len_0_2 holds seq 2, len_2_3 holds seq 3, len_3_inf holds seq 1
    assert metrics["actor/fspo/seqs_len_0_2"] == 1 and metrics["actor/fspo/clipped_len_0_2"] == 0
    assert metrics["actor/fspo/seqs_len_2_3"] == 1 and metrics["actor/fspo/clipped_len_2_3"] == 1
    assert metrics["actor/fspo/seqs_len_3_inf"] == 1 and metrics["actor/fspo/clipped_len_3_inf"] == 1


def test_hand_computed_token_mean(hand_config):
    old, new, adv, mask = padded_batch(SEQS, width=5)
    loss, _ = compute_policy_loss_fspo(old, new, adv, mask, "token-mean", hand_config)
    # (4*-1.221402758 + 2*0.452418709 + 3*6) / 9 tokens
    assert loss.item() == pytest.approx(1.557691821, abs=1e-9)
    loss.backward()
    assert new.grad[1, :2].tolist() == pytest.approx([0.100537491] * 2, abs=1e-9)  # 2*0.452418709/9
    assert new.grad[[0, 2]].abs().max().item() == 0.0


def test_band_grows_as_sqrt_length(hand_config):
    """S = 0.15 sits inside the band for L=4 (hi=0.2) but outside for L=1 (hi=0.1)."""
    d4 = [0.0375] * 4
    old, new, adv, mask = padded_batch([(1.0, d4), (1.0, [0.15])], width=4)
    _, metrics = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", hand_config)
    assert metrics["actor/fspo/clipped_len_0_2"] == 1  # L=1
    assert metrics["actor/fspo/clipped_len_3_inf"] == 0  # L=4


def test_kl_drift_recentres_the_band():
    """Tokens drift down: seq 1 has d = -0.05 (L=16, S=-0.8), seq 2 d = -0.06 (L=4, S=-0.24).
    Drift none: both fall below their bands (-0.8 < -0.1*4, -0.24 < -0.1*2).
    Drift kl: mu = -(0.8+0.24)/20 = -0.052, centres -0.832 and -0.208; both S_i lie within +-0.032 of
    their centre, well inside the half-widths 0.4 and 0.2, so nothing clips."""
    seqs = [(1.0, [-0.05] * 16), (-1.0, [-0.06] * 4)]
    common = [FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo",
              "+actor_rollout_ref.actor.policy_loss.fspo_c_low=0.1",
              "+actor_rollout_ref.actor.policy_loss.fspo_c_high=0.1"]
    kl = actor_config(common + ["+actor_rollout_ref.actor.policy_loss.fspo_drift=kl"])
    none = actor_config(common)
    old, new, adv, mask = padded_batch(seqs, width=16)
    _, m_kl = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", kl)
    _, m_none = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", none)
    assert m_kl["actor/pg_clipfrac"] == 0.0
    assert m_none["actor/pg_clipfrac"] == 1.0


def test_rollout_is_weights_scale_the_loss(hand_config):
    old, new, adv, mask = padded_batch(SEQS, width=5)
    base, _ = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", hand_config)
    weights = torch.full((3, 5), 0.5, dtype=torch.float64)
    scaled, _ = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", hand_config, weights)
    assert scaled.item() == pytest.approx(0.5 * base.item(), rel=1e-12)


def test_empty_rows_contribute_nothing(hand_config):
    old, new, adv, mask = padded_batch(SEQS + [(5.0, [])], width=5)
    loss, metrics = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", hand_config)
    assert loss.item() == pytest.approx(1.743671984, abs=1e-9)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(2 / 3)
    assert all(math.isfinite(v) for v in metrics.values())


def test_without_target_uses_documented_defaults():
    """loss_mode=fspo on verl's plain PolicyLossConfig runs with FSPOPolicyLossConfig's defaults."""
    plain = actor_config(["actor_rollout_ref.actor.policy_loss.loss_mode=fspo"])
    ours = actor_config([FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo"])
    old, new, adv, mask = padded_batch(SEQS, width=5)
    a, ma = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", plain)
    b, mb = compute_policy_loss_fspo(old, new, adv, mask, "seq-mean-token-mean", ours)
    assert a.item() == b.item() and ma == mb
