"""fspo_adaptive: the length-spread estimator and the loss (fspo_verl/losses/length_spread.py, fspo_adaptive.py).

Three ways: hand-computed bands; limiting cases (Var(S|L) proportional to L gives the calibrated FSPO band;
frozen statistics give exactly ``fspo``'s loss under every aggregation); a hypothesis property test on
Var(S|L) = a*L^alpha. Plus the degenerate cases: on-policy updates, empty bins, two gloo ranks, a resume.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _batches import padded_batch
from conftest import FSPO_TARGET, actor_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from fspo_verl.analysis.calibration import suggest_fspo_constants
from fspo_verl.losses.config import FSPOPolicyLossConfig
from fspo_verl.losses.fspo import compute_policy_loss_fspo
from fspo_verl.losses.fspo_adaptive import compute_policy_loss_fspo_adaptive
from fspo_verl.losses.length_spread import (
    LengthSpreadEstimator,
    SpreadSettings,
    estimator_for,
    reset_estimators,
    tail_quantile,
)

Z_10 = 1.6448536269514715  # Phi^-1(0.95): both tails together hold 0.1


def settings_for(**kw) -> SpreadSettings:
    base = {"edges": (4,), "target_rate": 0.1, "c_low": 0.01, "c_high": 0.01, "memory": 1e12, "prior_seqs": 0.0, "tol": 0.0,
            "sync_ranks": True}
    return SpreadSettings(**{**base, **kw})


def feed(est: LengthSpreadEstimator, lengths, centred) -> bool:
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    return est.update(lengths, torch.as_tensor(centred, dtype=torch.float64), lengths > 0)


@pytest.fixture(autouse=True)
def _fresh_estimators():
    reset_estimators()
    yield
    reset_estimators()


def test_registered_and_quantile():
    assert get_policy_loss_fn("fspo_adaptive") is compute_policy_loss_fspo_adaptive
    assert tail_quantile(0.1) == pytest.approx(Z_10, abs=1e-9)
    z = tail_quantile(0.1, kappa=2.0)  # Phi(-z) + Phi(-2z) = 0.1
    assert 0.5 * math.erfc(z / math.sqrt(2)) + 0.5 * math.erfc(2 * z / math.sqrt(2)) == pytest.approx(0.1, abs=1e-12)


def test_hand_computed_band_without_pooling():
    # bin 0 (L <= 4): L = 2, 2 with e = +-0.1 -> n=2, geometric mean 2, m2 = 0.01
    # bin 1 (L > 4):  L = 8, 8 with e = +-0.4 -> n=2, geometric mean 8, m2 = 0.16
    # fit: alpha = (log .16 - log .01) / (log 8 - log 2) = log 16 / log 4 = 2, b = log .01 - 2 log 2 = log .0025,
    # residuals 0: v(L) = 0.0025 L^2, sd = 0.05 L, half-width z*0.05*L with z = 1.6448536 (p = 0.1)
    est = LengthSpreadEstimator(settings_for())
    assert feed(est, [2, 2, 8, 8], [0.1, -0.1, 0.4, -0.4])
    b, alpha, residual, weight = est.fit()
    assert alpha == pytest.approx(2.0, abs=1e-12) and b == pytest.approx(math.log(0.0025), abs=1e-12)
    assert residual == pytest.approx([0.0, 0.0], abs=1e-12) and weight == 1.0
    low, high = est.half_widths(torch.tensor([2.0, 4.0, 8.0, 100.0], dtype=torch.float64))
    expected = [0.164485363, 0.328970725, 0.657941451, 8.224268135]
    torch.testing.assert_close(low, torch.tensor(expected, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(high, low)  # c_high / c_low = 1


def test_hand_computed_band_with_pooling():
    # the same data with n0 = 2 (prior_seqs):
    #   x = (log 2, log 8), y = (log .01, log .16), weights (2, 2); x_bar = log 4, sxx = 4 (ln 2)^2 = 1.921812,
    #   sxy = 8 (ln 2)^2 = 3.843624; alpha = (sxy + 2) / (sxx + 2) = 1.490031656; b = y_bar - alpha x_bar = -5.284498307
    #   residuals r_k = 2/(2+2) (y_k - b - alpha x_k) = (-0.176741560, +0.176741560)
    #   data weight N/(N+n0) = 4/6; prior log v0 = 2 log(0.01 / z) + log L
    #   half-width z * exp(0.5 * (4/6 (b + alpha log L + r_k) + 2/6 log v0)):
    #   L=2 -> 0.077003264, L=8 -> 0.217297069, L=100 (bin 1) -> 1.160599605
    est = LengthSpreadEstimator(settings_for(prior_seqs=2.0))
    feed(est, [2, 2, 8, 8], [0.1, -0.1, 0.4, -0.4])
    b, alpha, residual, weight = est.fit()
    assert alpha == pytest.approx(1.490031656, abs=1e-9) and b == pytest.approx(-5.284498307, abs=1e-9)
    assert residual == pytest.approx([-0.176741560, 0.176741560], abs=1e-9) and weight == pytest.approx(4 / 6)
    low, _ = est.half_widths(torch.tensor([2.0, 8.0, 100.0], dtype=torch.float64))
    torch.testing.assert_close(low, torch.tensor([0.077003264, 0.217297069, 1.160599605], dtype=torch.float64), atol=1e-8, rtol=0)


def test_var_proportional_to_length_gives_the_calibrated_fspo_band():
    """Limiting case: e = +-sigma*sqrt(L) exactly, so Var(S|L) = sigma^2 L in every bin. The band is then FSPO's
    sqrt(L) band at the constants `fspo-verl fairness calibrate` suggests for the target rate (mu = 0)."""
    sigma, kappa, rate = 0.012, 4 / 3, 0.1
    est = LengthSpreadEstimator(settings_for(edges=(8, 16, 32, 64), c_low=0.0179, c_high=0.0179 * kappa, target_rate=rate))
    lengths = [3, 3, 12, 12, 20, 20, 50, 50, 150, 150]
    feed(est, lengths, [s * sigma * math.sqrt(L) for L in lengths[::2] for s in (1, -1)])
    calibrated = suggest_fspo_constants(rate, sigma, mu=0.0, high_to_low=kappa)
    probe = torch.tensor([1.0, 5.0, 30.0, 100.0, 400.0], dtype=torch.float64)
    low, high = est.half_widths(probe)
    torch.testing.assert_close(low, calibrated.c_low * probe.sqrt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(high, calibrated.c_high * probe.sqrt(), rtol=1e-6, atol=0)


def test_var_proportional_to_length_with_default_pooling_and_gaussian_draws():
    sigma = 0.02
    gen = torch.Generator().manual_seed(3)
    est = LengthSpreadEstimator(settings_for(edges=(8, 16, 32, 64, 128), prior_seqs=64.0, memory=2048.0))
    for _ in range(8):  # eight updates of 512 sequences through the running window
        lengths = torch.randint(2, 160, (512,), generator=gen).double()
        feed(est, lengths, sigma * lengths.sqrt() * torch.randn(512, generator=gen, dtype=torch.float64))
    _, alpha, _, _ = est.fit()
    assert alpha == pytest.approx(1.0, abs=0.08)
    c = suggest_fspo_constants(0.1, sigma, mu=0.0, high_to_low=1.0).c_low
    probe = torch.tensor([4.0, 20.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(est.half_widths(probe)[0], c * probe.sqrt(), rtol=0.06, atol=0)


def _rates_per_bin(seq, lo, hi, idx, n_bins):
    out = (seq < lo) | (seq > hi)
    n = torch.bincount(idx, minlength=n_bins).double()
    c = torch.bincount(idx, weights=out.double(), minlength=n_bins)
    return n, c


def _max_z(n, c):
    """Largest |rate_k - pooled rate| in binomial standard errors, over bins with at least 200 sequences."""
    dense = n >= 200
    pooled = c[dense].sum() / n[dense].sum()
    se = (pooled * (1 - pooled) / n[dense]).sqrt()
    return float(((c[dense] / n[dense] - pooled).abs() / se).max())


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(alpha=st.sampled_from([0.5, 1.0, 1.5, 2.0]), log_a=st.floats(-12.0, -4.0), seed=st.integers(0, 2**16))
def test_adaptive_band_clips_every_bin_alike_when_var_is_a_power_of_length(alpha, log_a, seed):
    """Var(S|L) = a*L^alpha, Gaussian S: the adaptive band (fitted on one batch, applied to a fresh one) clips every
    length bin at the same rate within binomial noise; FSPO's sqrt(L) band at the c that gives the same overall
    rate does not, unless alpha = 1."""
    edges = (8, 16, 32, 64, 128, 256, 512)
    gen = torch.Generator().manual_seed(seed)

    def draw(n):
        lengths = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(2), math.log(1024), generator=gen)).round()
        return lengths, math.exp(log_a / 2) * lengths.pow(alpha / 2) * torch.randn(n, generator=gen, dtype=torch.float64)

    est = LengthSpreadEstimator(settings_for(edges=edges, prior_seqs=64.0, c_low=1e-3, c_high=1e-3))
    feed(est, *draw(40000))
    lengths, seq = draw(16000)
    idx = torch.bucketize(lengths, torch.tensor(edges, dtype=torch.float64))
    low, high = est.half_widths(lengths)
    n, c = _rates_per_bin(seq, -low, high, idx, len(edges) + 1)
    assert _max_z(n, c) < 4.5, (c / n).tolist()
    assert float(c.sum() / n.sum()) == pytest.approx(0.1, abs=0.02)  # the target, up to the fit's level noise

    ratio = (seq.abs() / lengths.sqrt()).sort().values
    c_fspo = float(ratio[int(0.9 * len(ratio))])  # sqrt(L) band with the same overall rate 0.1
    n, c = _rates_per_bin(seq, -c_fspo * lengths.sqrt(), c_fspo * lengths.sqrt(), idx, len(edges) + 1)
    if alpha == 1.0:
        assert _max_z(n, c) < 4.5, (c / n).tolist()
    else:
        assert _max_z(n, c) > 8.0, (c / n).tolist()


def test_on_policy_update_keeps_the_prior_and_the_band_is_fspos():
    """First update of a step: S_i = 0 for every sequence. No statistics, no division by zero, and the band is
    the prior, FSPO's own (c_low*sqrt(L), c_high*sqrt(L)); the loss, its gradient and the metrics are finite."""
    cfg = actor_config([FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo_adaptive",
                        "+actor_rollout_ref.actor.policy_loss.length_bins=[2,3]"])  # fmt: skip
    seqs = [(1.0, [0.0] * 4), (-0.5, [0.0] * 2), (0.0, [0.0] * 3)]
    old, new, adv, mask = padded_batch(seqs, width=5)
    loss, metrics = compute_policy_loss_fspo_adaptive(old, new, adv, mask, "seq-mean-token-mean", cfg)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(new.grad).all()
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["actor/fspo_adaptive/stat_seqs"] == 0.0 and metrics["actor/fspo_adaptive/alpha"] == 1.0
    assert metrics["actor/pg_clipfrac"] == 0.0
    hp = cfg.policy_loss
    est = estimator_for(SpreadSettings.from_config(hp))
    probe = torch.tensor([1.0, 9.0, 64.0], dtype=torch.float64)
    low, high = est.half_widths(probe)
    torch.testing.assert_close(low, hp.fspo_c_low * probe.sqrt(), rtol=1e-9, atol=0)
    torch.testing.assert_close(high, hp.fspo_c_high * probe.sqrt(), rtol=1e-9, atol=0)

    # after an off-policy update, a later on-policy one leaves the band as it was
    assert feed(est, [2, 3, 4, 4], [0.05, -0.05, 0.1, -0.08])
    before = est.half_widths(probe)
    assert not feed(est, [2, 3, 4, 4], [0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(est.half_widths(probe), before, rtol=0, atol=0)


def test_small_and_empty_bins_stay_finite():
    est = LengthSpreadEstimator(settings_for(edges=(8, 16, 32, 64), prior_seqs=64.0))
    assert feed(est, [20, 30, 25], [0.05, -0.02, 0.03])  # one bin with 3 sequences; four empty bins
    _, alpha, residual, weight = est.fit()
    assert alpha == pytest.approx(1.0) and weight == pytest.approx(3 / 67)  # alpha unidentified: the ridge's 1
    assert residual[0] == residual[1] == residual[3] == residual[4] == 0.0
    low, high = est.half_widths(torch.tensor([1.0, 10.0, 500.0, 0.0], dtype=torch.float64))
    assert torch.isfinite(low).all() and (low > 0).all() and torch.isfinite(high).all()
    # a micro-batch of padding only (L = 0 everywhere) is no update, and the loss's metrics hold no NaN
    assert not feed(est, [0, 0], [0.0, 0.0])
    cfg = actor_config([FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo_adaptive"])
    width = 6
    mask = torch.zeros(2, width, dtype=torch.bool)
    zeros = torch.zeros(2, width, dtype=torch.float64)
    loss, metrics = compute_policy_loss_fspo_adaptive(zeros, zeros.clone().requires_grad_(), zeros, mask, "seq-mean-token-mean", cfg)
    assert loss.item() == 0.0 and all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_frozen_statistics_give_exactly_fspos_loss_under_every_aggregation(agg):
    """Limiting case against fspo (itself tested against verl's agg_loss): with the on-policy tolerance so high
    that no update counts, the band is the prior, FSPO's, and the loss, gradient and clip metrics are fspo's,
    with verl's global batch info set as ppo_loss sets it."""
    common = [FSPO_TARGET, "+actor_rollout_ref.actor.policy_loss.fspo_c_low=0.1",
              "+actor_rollout_ref.actor.policy_loss.fspo_c_high=0.15", f"actor_rollout_ref.actor.loss_agg_mode={agg}"]  # fmt: skip
    fspo_cfg = actor_config([*common, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo"])
    ada_cfg = actor_config([*common, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo_adaptive",
                            "+actor_rollout_ref.actor.policy_loss.fspo_adaptive_onpolicy_tol=1e9"])  # fmt: skip
    info = {"dp_size": 2, "batch_num_tokens": 22, "global_batch_size": 6, "loss_scale_factor": None}
    for cfg in (fspo_cfg, ada_cfg):
        cfg.global_batch_info.update(info)
    seqs = [(1.0, [0.1, 0.1, 0.05, 0.05]), (-0.5, [0.1, -0.2]), (-2.0, [1.0, 1.0, 0.5]), (0.7, [-0.3, 0.02])]
    results = []
    for fn, cfg in ((compute_policy_loss_fspo, fspo_cfg), (compute_policy_loss_fspo_adaptive, ada_cfg)):
        old, new, adv, mask = padded_batch(seqs, width=5)
        loss, metrics = fn(old, new, adv, mask, agg, cfg)
        loss.backward()
        results.append((loss.item(), new.grad.clone(), metrics))
    (l1, g1, m1), (l2, g2, m2) = results
    assert l2 == pytest.approx(l1, rel=1e-12)
    torch.testing.assert_close(g2, g1, rtol=1e-12, atol=1e-15)
    assert m2["actor/pg_clipfrac"] == m1["actor/pg_clipfrac"] > 0
    assert m2["actor/pg_clipfrac_lower"] == m1["actor/pg_clipfrac_lower"]


def test_resume_rebuilds_the_statistics_from_the_first_update_with_spread():
    """The statistics live in the actor process and are not checkpointed: a resumed run (a fresh process) starts
    from the prior, and its first off-policy update gives the band of that update alone."""
    s = settings_for(edges=(8, 32), prior_seqs=16.0, memory=512.0)
    gen = torch.Generator().manual_seed(1)
    updates = []
    for _ in range(3):
        lengths = torch.randint(1, 64, (128,), generator=gen).double()
        updates.append((lengths, 0.01 * lengths * torch.randn(128, generator=gen, dtype=torch.float64)))
    est = estimator_for(s)
    for lengths, e in updates[:2]:
        est.update(lengths, e, lengths > 0)
    reset_estimators()  # what a new worker process after a resume holds
    resumed = estimator_for(s)
    assert resumed is not est and resumed.updates == 0
    probe = torch.tensor([4.0, 16.0, 60.0], dtype=torch.float64)
    torch.testing.assert_close(resumed.half_widths(probe)[0], 0.01 * probe.sqrt(), rtol=1e-12, atol=0)  # the prior
    resumed.update(updates[2][0], updates[2][1], updates[2][0] > 0)
    alone = LengthSpreadEstimator(s)
    alone.update(updates[2][0], updates[2][1], updates[2][0] > 0)
    torch.testing.assert_close(resumed.half_widths(probe)[0], alone.half_widths(probe)[0], rtol=0, atol=0)


_RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, torch.distributed as dist
    from fspo_verl.losses.length_spread import LengthSpreadEstimator, SpreadSettings
    rank, store = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
    s = SpreadSettings(edges=(8, 32), target_rate=0.1, c_low=0.01, c_high=0.01, memory=512.0, prior_seqs=16.0,
                       tol=0.0, sync_ranks=True, rate_gain=0.2)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    est = LengthSpreadEstimator(s)
    for _ in range(2):
        lengths = torch.randint(1, 64, (64,), generator=gen).double()
        centred = (0.01 + 0.01 * rank) * lengths * torch.randn(64, generator=gen, dtype=torch.float64)
        est.update(lengths, centred, lengths > 0)
    low, _ = est.half_widths(torch.tensor([4.0, 16.0, 60.0], dtype=torch.float64))
    print(json.dumps(low.tolist()))
    dist.destroy_process_group()
    """
)


def test_two_gloo_ranks_hold_the_same_band_as_one_process_with_all_the_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    store = str(tmp_path / "store")
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(r), store], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in range(2)]  # fmt: skip
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    # the same updates, summed over both ranks, in one process without a process group
    s = SpreadSettings(edges=(8, 32), target_rate=0.1, c_low=0.01, c_high=0.01, memory=512.0, prior_seqs=16.0, tol=0.0, sync_ranks=True,
                       rate_gain=0.2)
    gens = [torch.Generator().manual_seed(100 + r) for r in range(2)]
    est = LengthSpreadEstimator(s)
    for _ in range(2):
        parts = []
        for rank, gen in enumerate(gens):
            lengths = torch.randint(1, 64, (64,), generator=gen).double()
            parts.append((lengths, (0.01 + 0.01 * rank) * lengths * torch.randn(64, generator=gen, dtype=torch.float64)))
        lengths, centred = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        est.update(lengths, centred, lengths > 0)
    assert any(est.log_scale)  # the rate tracker moved, from the clip counts of both ranks
    assert outs[0] == pytest.approx(est.half_widths(torch.tensor([4.0, 16.0, 60.0], dtype=torch.float64))[0].tolist(), rel=1e-12)


@pytest.mark.parametrize(
    ("key", "value"),
    [("fspo_target_clip_rate", 0.0), ("fspo_target_clip_rate", 1.0), ("fspo_adaptive_memory", 0.0),
     ("fspo_adaptive_prior_seqs", -1.0), ("fspo_adaptive_onpolicy_tol", float("nan")), ("fspo_adaptive_sync_ranks", "yes"),
     ("fspo_adaptive_rate_gain", -0.1)],
)  # fmt: skip
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"actor_rollout_ref.actor.policy_loss.{key}="):
        FSPOPolicyLossConfig(**{key: value})


def test_prior_exponent_sets_the_band_before_data_and_the_ridge_target():
    est = LengthSpreadEstimator(settings_for(edges=(8, 16, 32), prior_seqs=64.0, prior_exponent=0.8))
    probe = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(est.half_widths(probe)[0], 0.01 * probe.pow(0.8), rtol=1e-12, atol=0)  # c_low*L^beta0
    feed(est, [20, 30, 25], [0.05, -0.02, 0.03])  # one bin: alpha is not identified, the ridge gives 2*beta0
    assert est.fit()[1] == pytest.approx(1.6)


def test_rate_tracker_hand_computed_step():
    """Before any data the band is the prior c_low*sqrt(L): 0.02 at L=4 (bin 0), 0.04 at L=16 (bin 1). Bin 0 gets
    4 sequences, one outside (0.03 > 0.02); bin 1 gets 2, one outside (0.05 > 0.04). With p = 0.1, eta = 0.5:
        s_0 = 0.5 * (1 - 0.1*4) / max(0.1*4, 1) = 0.3,   s_1 = 0.5 * (1 - 0.1*2) / max(0.1*2, 1) = 0.4
    and the band is the second-moment band (eta = 0, the same data) times exp(s_k)."""
    lengths, centred = [4, 4, 4, 4, 16, 16], [0.03, 0.0, 0.0, 0.0, 0.05, 0.0]
    tracked = LengthSpreadEstimator(settings_for(rate_gain=0.5, tol=1e-9))
    plain = LengthSpreadEstimator(settings_for())
    assert feed(tracked, lengths, centred) and feed(plain, lengths, centred)
    assert tracked.log_scale == pytest.approx([0.3, 0.4], abs=1e-12)
    assert plain.log_scale == [0.0, 0.0]
    probe = torch.tensor([3.0, 10.0], dtype=torch.float64)
    ratio = tracked.half_widths(probe)[0] / plain.half_widths(probe)[0]
    torch.testing.assert_close(ratio, torch.tensor([math.exp(0.3), math.exp(0.4)], dtype=torch.float64), rtol=1e-12, atol=0)
    # an update at exactly the target rate (1 of 10 outside) leaves s_k where it was; an on-policy one too
    before = list(tracked.log_scale)
    low = float(tracked.half_widths(torch.tensor([4.0], dtype=torch.float64))[0][0])
    feed(tracked, [4] * 10, [low * 1.5] + [0.0] * 9)
    assert tracked.log_scale[0] == pytest.approx(before[0], abs=1e-12)
    assert not feed(tracked, [4, 16], [0.0, 0.0]) and tracked.log_scale[0] == pytest.approx(before[0], abs=1e-12)


def _slips(n, gen, slip_sd=0.05):
    """Heavy tails whose shape changes with length: a sequence has ~Poisson(L/32) slips of N(0, slip_sd^2) each on
    top of a Gaussian floor N(0, 1e-6 L). A short answer's S is ~0 with a rare large value, a long one's sums many."""
    lengths = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(2), math.log(512), generator=gen)).round()
    slips = torch.poisson(lengths / 32.0, generator=gen)
    seq = slips.sqrt() * slip_sd * torch.randn(n, generator=gen, dtype=torch.float64)
    return lengths, seq + 1e-3 * lengths.sqrt() * torch.randn(n, generator=gen, dtype=torch.float64)


@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.generate])  # each example is a few seconds: no shrinking
@given(seed=st.integers(0, 2**16))
def test_rate_tracker_clips_every_bin_at_the_target_when_the_shape_changes_with_length(seed):
    """S | L far from Gaussian, its shape changing with L: the second-moment band alone clips the bins unequally
    and off the target; with the tracker (150 updates of 512 sequences) each bin clips at the target within
    binomial noise on fresh draws."""
    edges, target = (8, 16, 32, 64, 128, 256), 0.2
    gen = torch.Generator().manual_seed(seed)
    kw = {"edges": edges, "target_rate": target, "prior_seqs": 64.0, "memory": 4096.0, "c_low": 1e-3, "c_high": 1e-3}
    tracked, plain = LengthSpreadEstimator(settings_for(rate_gain=0.1, **kw)), LengthSpreadEstimator(settings_for(**kw))
    for _ in range(150):
        lengths, seq = _slips(512, gen)
        feed(tracked, lengths, seq)
        feed(plain, lengths, seq)
    lengths, seq = _slips(20000, gen)
    idx = torch.bucketize(lengths, torch.tensor(edges, dtype=torch.float64))
    low, high = plain.half_widths(lengths)
    n, c = _rates_per_bin(seq, -low, high, idx, len(edges) + 1)
    unequal = _max_z(n, c)
    assert unequal > 8.0, (c / n).tolist()  # the second moment alone: the short answers clip far less
    low, high = tracked.half_widths(lengths)
    n, c = _rates_per_bin(seq, -low, high, idx, len(edges) + 1)
    rates = (c / n)[n >= 200]
    # every bin within +-30% of the target (the tracker's own noise, a few percent of the band, adds to the fresh
    # draws' binomial noise of ~0.008), and far more alike than without the tracker
    assert float((rates - target).abs().max()) <= 0.3 * target, rates.tolist()
    assert _max_z(n, c) < unequal / 2, rates.tolist()
