"""Length-fairness simulation, FSPO calibration, and the per-method clip indicators they rest on.

Indicators are checked against verl's REAL built-in losses (per-row clip metrics, autograd gradients) and
against our real fspo/sspo losses' own metrics.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from _verl_run_log import actor_config, write_run
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config.actor import FSDPActorConfig

from fspo_verl import cli
from fspo_verl.analysis.calibration import (
    predicted_fspo_clip_rate,
    run_statistics,
    sigma_from_ppo_kl,
    suggest_fspo_constants,
)
from fspo_verl.analysis.simulation import (
    MethodConstants,
    SimulationSpec,
    draw_lengths,
    simulate,
)
from fspo_verl.diagnostics.clip_rates import sequence_clipped

# ------------------------------------------------------------------ simulation: the paper's central figure


@pytest.fixture(scope="module")
def default_result():
    return simulate(SimulationSpec(n=12000, seed=0))


def test_fixed_band_clips_long_most_gspo_long_least_fspo_flat(default_result):
    r = {m: default_result.rates(m) for m in ("ppo_seq", "gspo", "fspo")}
    assert all(n > 1000 for n in default_result.seqs)  # every bin is well filled (log-uniform lengths)
    # fixed PPO band on exp(S): rises with length, longest bin clipped most
    assert max(r["ppo_seq"]) == r["ppo_seq"][-1] and r["ppo_seq"][-1] > r["ppo_seq"][0] + 0.5
    # GSPO's band on exp(S/L): falls with length, longest bin clipped least
    assert min(r["gspo"]) == r["gspo"][-1] and r["gspo"][0] > r["gspo"][-1] + 0.5
    # FSPO's sqrt(L) band: flat within 0.05
    assert max(r["fspo"]) - min(r["fspo"]) <= 0.05
    # ... and at the CLT value Phi(-c_low/sigma) + Phi(-c_high/sigma) (about 0.27 at the defaults)
    assert default_result.overall_rate("fspo") == pytest.approx(predicted_fspo_clip_rate(0.0096, 0.0128, 0.01), abs=0.02)
    # at the longest bin: fixed > FSPO > GSPO
    assert r["ppo_seq"][-1] > r["fspo"][-1] > r["gspo"][-1]


def test_fspo_is_flat_only_when_its_centre_tracks_the_drift():
    """With a per-token drift mu != 0, S_i's centre L*mu leaves a zero-centred band at long L: fspo_drift=none
    clips long responses more; fspo_drift=kl (centre = batch mean of d) is flat again."""
    spec = SimulationSpec(n=8000, seed=1, mu=-0.002, sigma=0.01)
    none = simulate(spec, MethodConstants.with_policy_loss(fspo_drift="none"), ["fspo"]).rates("fspo")
    kl = simulate(spec, MethodConstants.with_policy_loss(fspo_drift="kl"), ["fspo"]).rates("fspo")
    assert none[-1] > none[0] + 0.3
    assert max(kl) - min(kl) <= 0.05


def test_uniform_and_lognormal_lengths_and_student_t_tokens_run():
    uniform = simulate(SimulationSpec(n=3000, length_dist="uniform", edges=[256, 1024, 4096]))
    assert sum(uniform.seqs) == 3000 and uniform.seqs[0] < uniform.seqs[-1]  # uniform puts few in 16..256
    spec = SimulationSpec(n=3000, length_dist="lognormal", token_dist="t", t_df=4.0, edges=[256, 1024, 4096])
    lengths = draw_lengths(spec, torch.Generator().manual_seed(0))
    assert lengths.min() >= 16 and lengths.max() <= 8192  # truncated, not clamped: no pile-up at the edges
    assert (lengths == 8192).float().mean() < 0.01
    heavy = simulate(spec)
    assert uniform.rates("ppo_seq")[-1] > uniform.rates("ppo_seq")[0]
    assert heavy.rates("ppo_seq")[-1] > heavy.rates("ppo_seq")[0]


def test_simulation_is_reproducible():
    spec = SimulationSpec(n=500, seed=7, token_dist="t")
    assert simulate(spec).clipped == simulate(spec).clipped


def test_bad_simulation_input_names_the_flag(capsys):
    assert cli.main(["fairness", "simulate", "--sigma", "-1", "--out", "/dev/null"]) == 2
    assert "--sigma=-1.0 is invalid" in capsys.readouterr().err
    assert cli.main(["fairness", "simulate", "--min-len", "100", "--max-len", "50", "--out", "/dev/null"]) == 2
    assert "--min-len/--max-len=(100, 50) is invalid" in capsys.readouterr().err
    assert cli.main(["fairness", "simulate", "--methods", "ppo,fspo", "--out", "/dev/null"]) == 2
    assert "unknown ['ppo']" in capsys.readouterr().err


def test_cli_simulate_prints_table_and_writes_png_and_json(tmp_path, capsys):
    png, js = tmp_path / "f.png", tmp_path / "f.json"
    assert cli.main(["fairness", "simulate", "--n", "1500", "--methods", "all", "--out", str(png), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "length bin" in out and "spread max-min" in out and "geo_mean" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    data = json.loads(js.read_text())
    assert sum(data["seqs"]) == 1500 and set(data["rates"]) == {"ppo_seq", "vanilla", "gspo", "geo_mean", "sapo", "cispo", "fspo", "sspo"}
    assert all(r is None or 0.0 <= r <= 1.0 for rates in data["rates"].values() for r in rates)


# ------------------------------------------------------------------ calibration


@pytest.mark.parametrize(
    "target, sigma, mu, drift",
    [(0.05, 0.01, 0.0, "none"), (0.2, 0.02, 0.0, "none"), (0.1, 0.01, -0.0005, "none"), (0.1, 0.01, -0.0005, "kl")],
)
def test_calibrated_constants_hit_the_target_in_simulation(target, sigma, mu, drift):
    spec = SimulationSpec(n=10000, seed=3, sigma=sigma, mu=mu)
    lengths = draw_lengths(spec, torch.Generator().manual_seed(spec.seed)).tolist()  # the simulation's lengths
    s = suggest_fspo_constants(target, sigma, mu, drift, lengths)
    assert s.c_high == pytest.approx(s.c_low * 0.0128 / 0.0096)
    assert s.predicted_rate == pytest.approx(target, abs=1e-6)
    constants = MethodConstants.with_policy_loss(fspo_c_low=s.c_low, fspo_c_high=s.c_high, fspo_drift=drift)
    simulated = simulate(spec, constants, ["fspo"]).overall_rate("fspo")
    assert simulated == pytest.approx(target, abs=0.02)


def test_calibration_from_a_run_log(tmp_path, capsys):
    """The fixture's tokens have d ~ N(-sigma^2/2, sigma^2) with sigma = 0.02, so actor/ppo_kl ~ 2e-4."""
    path, _ = write_run(tmp_path / "run.jsonl", steps=3, sigma=0.02)
    ppo_kl, lengths, weights = run_statistics(path)
    assert len(lengths) == len(weights) >= 3 and all(w > 0 for w in weights)  # from the per-bin counts
    assert sigma_from_ppo_kl(ppo_kl) == pytest.approx(0.02, rel=0.1)
    assert cli.main(["fairness", "calibrate", "--target", "0.1", "--run", str(path), "--drift", "kl", "--check"]) == 0
    out = capsys.readouterr().out
    assert "median actor/ppo_kl=" in out and "+actor_rollout_ref.actor.policy_loss.fspo_c_low=" in out
    simulated = float(out.split("check: simulated ")[1].split()[0])
    assert simulated == pytest.approx(0.1, abs=0.02)


def test_calibration_rejects_what_it_cannot_use(tmp_path, capsys):
    with pytest.raises(ValueError, match="must be > 0"):
        sigma_from_ppo_kl(-1e-5)
    assert sigma_from_ppo_kl(5e-5) == pytest.approx(0.01)
    assert cli.main(["fairness", "calibrate", "--target", "0", "--sigma", "0.01"]) == 2
    assert "--target=0.0 is invalid" in capsys.readouterr().err
    log = tmp_path / "no_kl.jsonl"
    log.write_text(json.dumps({"step": 1, "data": {"response_length/mean": 100.0}}) + "\n")
    assert cli.main(["fairness", "calibrate", "--target", "0.1", "--run", str(log)]) == 2
    assert "no actor/ppo_kl metric" in capsys.readouterr().err


# ------------------------------------------------------------------ clip indicators vs the real losses


def _batch(bs=6, width=40, scale=0.15, positive=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (bs,), generator=g)  # (bs,)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # (bs, T)
    old = -torch.rand(bs, width, generator=g)  # (bs, T)
    d = scale * torch.randn(bs, width, generator=g)  # (bs, T)
    if positive:
        d = d.abs()
    adv = torch.ones(bs, width) if positive else torch.randn(bs, 1, generator=g).expand(bs, width)  # (bs, T)
    return old, old + d, adv, mask


def _verl_actor(**kw) -> FSDPActorConfig:
    return FSDPActorConfig(rollout_n=1, ppo_micro_batch_size_per_gpu=1, **kw)


@pytest.mark.parametrize(
    "method, config",
    [
        ("vanilla", dict(clip_ratio_low=0.2, clip_ratio_high=0.2)),
        ("gspo", dict(clip_ratio_low=0.1, clip_ratio_high=0.1)),
        ("geo_mean", dict(clip_ratio_low=0.3, clip_ratio_high=0.3)),
    ],
)
def test_hard_clip_indicators_agree_with_verls_own_clipfrac(method, config):
    """With A > 0 and ratios >= 1, clipping binds exactly where the ratio leaves the band: verl's per-row
    pg_clipfrac is > 0 exactly for the rows our indicator flags."""
    cfg = _verl_actor(**config)
    old, new, adv, mask = _batch(bs=12, positive=True, scale=0.12)
    flags = sequence_clipped(method, old, new, adv, mask, cfg)  # (bs,)
    loss_fn = get_policy_loss_fn(method)
    verl_flags = [
        loss_fn(old_log_prob=old[i : i + 1], log_prob=new[i : i + 1], advantages=adv[i : i + 1],
                response_mask=mask[i : i + 1], loss_agg_mode="token-mean", config=cfg)[1]["actor/pg_clipfrac"] > 0
        for i in range(old.shape[0])
    ]  # fmt: skip
    assert flags.tolist() == verl_flags
    assert 0 < sum(verl_flags) < len(verl_flags)  # the case distinguishes


def test_sapo_gated_means_the_gate_removed_over_1pct_of_the_gradient():
    """Per token, d(sapo loss)/d(log_prob) over the unclipped PPO gradient is g'(r); checked with autograd
    through verl's real sapo and vanilla (band wide open) losses."""
    cfg = _verl_actor(clip_ratio_low=0.99, clip_ratio_high=100.0, tau_pos=1.0, tau_neg=1.05)
    d = torch.linspace(-0.6, 0.6, 25).unsqueeze(1)  # (25, 1) one token per row
    old = torch.zeros_like(d)
    mask = torch.ones_like(d, dtype=torch.bool)
    adv = torch.ones_like(d)
    grads = {}
    for mode in ("sapo", "vanilla"):
        new = d.clone().requires_grad_(True)
        loss, _ = get_policy_loss_fn(mode)(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                                           loss_agg_mode="seq-mean-token-mean", config=cfg)  # fmt: skip
        loss.backward()
        grads[mode] = new.grad.squeeze(1)  # (25,)
    scale = grads["sapo"] / grads["vanilla"]  # (25,) g'(r)
    flags = sequence_clipped("sapo", old, d, adv, mask, cfg)
    assert flags.tolist() == (1.0 - scale > 0.01).tolist()
    assert 0 < int(flags.sum()) < 25


@pytest.mark.parametrize("mode, drift", [("fspo", "none"), ("fspo", "kl"), ("sspo", "none")])
def test_fspo_sspo_indicators_are_what_the_losses_report(mode, drift):
    cfg = actor_config(mode, fspo_drift=drift, fspo_c_low=0.3, fspo_c_high=0.4)
    old, new, adv, mask = _batch(bs=32, scale=0.1, seed=5)
    mask[3] = False  # an empty row counts for nothing
    flags = sequence_clipped(mode, old, new, adv, mask, cfg)
    _, metrics = get_policy_loss_fn(mode)(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                                          loss_agg_mode="seq-mean-token-mean", config=cfg)  # fmt: skip
    clipped = sum(v for k, v in metrics.items() if "/clipped_len_" in k)
    assert clipped == int(flags.sum())
    assert metrics["actor/pg_clipfrac"] == pytest.approx(int(flags.sum()) / 31)
    assert not flags[3]
    if mode == "fspo":
        assert 0 < int(flags.sum()) < 31


def test_fixed_sequence_band_is_on_exp_of_the_sum():
    cfg = _verl_actor(clip_ratio_low=0.2, clip_ratio_high=0.2)
    mask = torch.ones(3, 10, dtype=torch.bool)
    per_token = torch.tensor([[0.017], [0.019], [-0.03]]).expand(3, 10)  # S = 0.17, 0.19, -0.3
    flags = sequence_clipped("ppo_seq", torch.zeros(3, 10), per_token, torch.ones(3, 10), mask, cfg)
    # exp(0.17) = 1.185 inside, exp(0.19) = 1.209 outside, exp(-0.3) = 0.741 outside
    assert flags.tolist() == [False, True, True]
    assert math.exp(0.17) < 1.2 < math.exp(0.19)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        sequence_clipped("ppo", *_batch(), _verl_actor())

