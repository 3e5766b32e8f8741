"""SSPO loss: hand-computed values, limiting cases against verl's gspo, gates and metrics (arXiv 2602.19327)."""

from __future__ import annotations

import pytest
import torch
from _batches import padded_batch
from conftest import FSPO_TARGET, actor_config

from fspo_verl.losses.sspo import compute_policy_loss_sspo
from verl.trainer.ppo.core_algos import compute_policy_loss_gspo, get_policy_loss_fn

SSPO = [FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=sspo"]


def sspo_config(gate: str, *extra: str):
    return actor_config(SSPO + [f"+actor_rollout_ref.actor.policy_loss.sspo_gate={gate}", *extra])


def test_registered_under_sspo():
    assert get_policy_loss_fn("sspo") is compute_policy_loss_sspo


def test_hand_computed_sigmoid_gate():
    """Sigmoid gate g(r) = sigmoid(tau (r-1)) 4/tau, tau_pos = 1, tau_neg = 1.05.

    seq 1: A=+1,  d=[.2,-.1]    log g = [0.797733636, 0.644434327]  w = e^mean = 2.056661386  l = -2.056661386
    seq 2: A=-1,  d=[0,.3,-.3]  log g = [0.644357016, 0.811258480, 0.499057428]  w = 1.918526880  l = 1.918526880
    seq 3: A=.5,  d=[2]         log g = [1.384615929]  w = 3.993291904  l = -1.996645952
    loss (seq-mean-token-mean) = (-2.056661386 + 1.918526880 - 1.996645952) / 3 = -0.711593486
    d l_i / d d_t = -A_i w_i (1/L_i) tau (1 - sigmoid(tau (r_t - 1))) r_t, divided by 3 sequences.
    Gated (|w/g(1) / GSPO ratio - 1| > 1%): seq 1 (2.18%) and seq 3 (73%), not seq 2 (0.72%).
    """
    old, new, adv, mask = padded_batch([(1.0, [0.2, -0.1]), (-1.0, [0.0, 0.3, -0.3]), (0.5, [2.0])], width=4)
    loss, metrics = compute_policy_loss_sspo(old, new, adv, mask, "seq-mean-token-mean", sspo_config("sigmoid", "+actor_rollout_ref.actor.policy_loss.length_bins=[1,2]"))
    assert loss.item() == pytest.approx(-0.711593486, abs=1e-9)
    loss.backward()
    expected = torch.tensor(
        [
            [-0.186254927, -0.162451962, 0.0, 0.0],
            [0.111914068, 0.123628493, 0.094120192, 0.0],
            [-0.008247229, 0.0, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(new.grad, expected, atol=1e-9, rtol=0)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(2 / 3)
    assert metrics["actor/pg_clipfrac_lower"] == 0.0  # the only A<=0 sequence is not gated
    assert (metrics["actor/sspo/seqs_len_0_1"], metrics["actor/sspo/clipped_len_0_1"]) == (1, 1)
    assert (metrics["actor/sspo/seqs_len_1_2"], metrics["actor/sspo/clipped_len_1_2"]) == (1, 1)
    assert (metrics["actor/sspo/seqs_len_2_inf"], metrics["actor/sspo/clipped_len_2_inf"]) == (1, 0)


def _gspo_reference_config():
    """verl's gspo with a clip band that never binds: ratio in [1-1, 1+1e9]."""
    return actor_config(
        [
            "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
            "actor_rollout_ref.actor.clip_ratio_low=1.0",
            "actor_rollout_ref.actor.clip_ratio_high=1e9",
        ]
    )


@pytest.mark.parametrize("agg", ["seq-mean-token-mean"])
def test_identity_gate_equals_verl_gspo(agg):
    torch.manual_seed(3)
    bs, width = 6, 9
    old = -torch.rand(bs, width, dtype=torch.float64) * 3
    new_ours = (old + 0.3 * torch.randn(bs, width, dtype=torch.float64)).requires_grad_(True)
    new_gspo = new_ours.detach().clone().requires_grad_(True)
    lengths = torch.tensor([9, 1, 4, 7, 2, 5])
    mask = torch.arange(width)[None, :] < lengths[:, None]
    adv = torch.randn(bs, 1, dtype=torch.float64).expand(bs, width).clone()

    ours, _ = compute_policy_loss_sspo(old, new_ours, adv, mask, agg, sspo_config("identity"))
    ref, _ = compute_policy_loss_gspo(old, new_gspo, adv, mask, agg, _gspo_reference_config())
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    torch.testing.assert_close(new_ours.grad, new_gspo.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gate", ["sigmoid", "arctan", "identity"])
def test_on_policy_gradient_equals_gspo(gate):
    """At r = 1 (log_prob == old_log_prob) every gate gives GSPO's gradient -A_i (1/L_i) sum_t grad log pi."""
    torch.manual_seed(4)
    bs, width = 5, 6
    old = -torch.rand(bs, width, dtype=torch.float64) * 2
    new_ours = old.clone().requires_grad_(True)
    new_gspo = old.clone().requires_grad_(True)
    mask = torch.arange(width)[None, :] < torch.tensor([6, 3, 1, 5, 2])[:, None]
    adv = torch.tensor([1.5, -0.5, 0.0, 2.0, -1.0], dtype=torch.float64)[:, None].expand(bs, width).clone()

    ours, metrics = compute_policy_loss_sspo(old, new_ours, adv, mask, "seq-mean-token-mean", sspo_config(gate))
    ref, _ = compute_policy_loss_gspo(old, new_gspo, adv, mask, "seq-mean-token-mean", _gspo_reference_config())
    ours.backward()
    ref.backward()
    torch.testing.assert_close(new_ours.grad, new_gspo.grad, rtol=1e-10, atol=1e-12)
    assert metrics["actor/pg_clipfrac"] == 0.0  # on-policy nothing is gated


def test_arctan_gate_bounds_the_log_weight():
    """|log g| < pi/(2 tau): a huge token ratio cannot push w_i past exp(pi/2) for tau = 1."""
    old, new, adv, mask = padded_batch([(1.0, [15.0, 15.0])], width=2)
    loss, metrics = compute_policy_loss_sspo(old, new, adv, mask, "seq-mean-token-mean", sspo_config("arctan"))
    # w = exp(arctan(15)) = exp(1.504228163) = 4.500678499, l = -w
    assert loss.item() == pytest.approx(-4.500678499, abs=1e-8)
    assert metrics["actor/pg_clipfrac"] == 1.0
