"""`fspo-verl fairness calibrate --fit-exponent`: the length exponent of the spread of S_i from a pilot fspo run's
per-bin clip counts (fspo_verl/analysis/calibration.py), and the fspo_adaptive overrides it prints."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
from conftest import compose_verl
from verl.utils.config import omega_conf_to_dataclass

from fspo_verl.analysis.calibration import _phi, fit_length_exponent, tail_quantile
from fspo_verl.cli import main as cli
from fspo_verl.cli.validate import compose

C_LOW, KAPPA, SCALE = 0.02, 4 / 3, 0.004
EDGES = [8, 16, 32, 64, 128]
NAMES = ["len_0_8", "len_8_16", "len_16_32", "len_32_64", "len_64_128", "len_128_inf"]


def model_rate(length: float, beta: float) -> float:
    """Off-policy clip rate of FSPO's band c_low*sqrt(L) when sd(S|L) = SCALE * L^beta."""
    z = C_LOW * math.sqrt(length) / (SCALE * length**beta)
    return _phi(-z) + _phi(-KAPPA * z)


@pytest.mark.parametrize("beta", [0.3, 0.5, 0.8, 1.0])
def test_exact_rates_give_the_exponent_and_scale_back(beta):
    lengths = [3.0, 11.0, 22.0, 45.0, 90.0, 150.0]
    share = 0.5  # half the updates on-policy: the pooled rate is half the off-policy one
    rates = [share * model_rate(length, beta) for length in lengths]
    fit = fit_length_exponent(NAMES, lengths, [1e6] * 6, rates, C_LOW, KAPPA, share)
    assert fit.beta == pytest.approx(beta, abs=1e-9) and fit.scale == pytest.approx(SCALE, rel=1e-8)
    assert fit.used == NAMES and fit.skipped == []


def test_hand_computed_two_bins():
    # kappa = 1, share 1: rates 2*Phi(-2) = 0.0455003 at L = 4 and 2*Phi(-1) = 0.3173105 at L = 64
    # z = (2, 1): sd_4 = 0.02*2/2 = 0.02, sd_64 = 0.02*8/1 = 0.16; beta = log(0.16/0.02)/log(16) = log 8 / log 16 = 0.75
    fit = fit_length_exponent(["a", "b"], [4.0, 64.0], [500.0, 500.0], [0.0455003, 0.3173105], 0.02, 1.0, 1.0)
    assert fit.beta == pytest.approx(0.75, abs=1e-5) and fit.scale == pytest.approx(0.02 / 4**0.75, rel=1e-4)
    assert math.isnan(fit.beta_se)  # two points: no degrees of freedom left for the lack-of-fit check


def test_bins_without_a_rate_are_left_out_and_too_few_is_a_clear_error():
    fit = fit_length_exponent(NAMES[:4], [3.0, 11.0, 22.0, 45.0], [100.0, 0.0, 100.0, 100.0], [0.0, None, 0.05, 0.2],
                              C_LOW, KAPPA, 1.0)  # fmt: skip
    assert fit.used == ["len_16_32", "len_32_64"] and fit.skipped == ["len_0_8", "len_8_16"]
    with pytest.raises(ValueError, match="--fit-exponent: only 1 length bin"):
        fit_length_exponent(NAMES[:2], [3.0, 11.0], [100.0, 100.0], [0.0, 0.1], C_LOW, KAPPA, 1.0)


# 16 prompts x 4 responses a step, mini-batches of 8 prompts: 2 updates a step, the second off-policy (share 1/2)
GEOMETRY = (
    "data:\n  train_batch_size: 16\ntrainer: {}\n"
    "actor_rollout_ref:\n  rollout:\n    n: 4\n  actor:\n    ppo_mini_batch_size: 8\n    ppo_epochs: 1\n"
)
# PODS keeping 4 of 8 responses: 16 prompts x 4 kept = 64 samples a step in mini-batches of 4 prompts x n=8 = 32
# samples: 2 updates a step, share 1/2 again (16 // 4 = 4 updates, share 3/4, if the kept samples were ignored)
PODS_GEOMETRY = (
    "data:\n  train_batch_size: 16\n"
    "trainer:\n  v1:\n    sampler:\n      custom_sampler:\n        path: pkg://fspo_verl.pods\n"
    "      sampler_kwargs:\n        keep: 4\n"
    "actor_rollout_ref:\n  rollout:\n    n: 8\n  actor:\n    ppo_mini_batch_size: 4\n    ppo_epochs: 1\n"
)
# one mini-batch a step: every update on-policy, nothing clipped to fit
ONE_UPDATE_GEOMETRY = GEOMETRY.replace("ppo_mini_batch_size: 8", "ppo_mini_batch_size: 16")


def _write_pilot(tmp_path, beta: float, geometry: str = GEOMETRY):
    """A pilot run's metrics_0.jsonl (verl's file-logger lines) with per-bin counts following the model (pooled
    over steps whose updates are half off-policy), and its config_0.yaml as `fspo-verl train` writes it (the band
    and the batch ``geometry``)."""
    # each bin's geometric middle; the open bin reaches the longest response (256 here)
    mids = [math.sqrt(max(lo, 1) * hi) for lo, hi in zip([0, *EDGES], [*EDGES, 256])]
    lines = []
    for step in range(1, 4):
        data = {"perf/total_num_tokens": 256 * (1 + 60), "prompt_length/mean": 1.0, "response_length/mean": 60.0,
                "response_length/max": 256.0}  # fmt: skip
        for name, mid in zip(NAMES, mids):
            data[f"actor/fspo/seqs_{name}"] = 20.0
            data[f"actor/fspo/clipped_{name}"] = 20.0 * 0.5 * model_rate(mid, beta)
        lines.append(json.dumps({"step": step, "data": data}))
    (tmp_path / "metrics_0.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "config_0.yaml").write_text(
        geometry + f"    policy_loss:\n      fspo_c_low: {C_LOW}\n      fspo_c_high: {C_LOW * KAPPA}\n"
    )
    return tmp_path / "metrics_0.jsonl"


@pytest.fixture
def printed(tmp_path) -> tuple[str, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["fairness", "calibrate", "--target", "0.1", "--run", str(_write_pilot(tmp_path, 0.9)), "--fit-exponent"]) == 0
    lines = [line.strip().removesuffix("\\").strip() for line in out.getvalue().splitlines() if line.startswith("  ") and "actor_rollout_ref." in line]
    return out.getvalue(), lines


def test_cli_fits_the_pilots_exponent_and_prints_overrides_for_both_entry_points(printed, capsys):
    text, lines = printed
    assert "beta = 0.900" in text, text
    values = {line.split("=")[0].rsplit(".", 1)[-1]: line.split("=", 1)[1] for line in lines}
    assert values["loss_mode"] == "fspo_adaptive" and float(values["fspo_adaptive_prior_exponent"]) == pytest.approx(0.9)
    # the band c*L^beta with c = z_0.1 * s
    assert float(values["fspo_c_low"]) == pytest.approx(tail_quantile(0.1, KAPPA) * SCALE, rel=1e-3)
    for actor in (compose(["algorithm=fspo_adaptive", *lines]).actor_rollout_ref.actor,  # fspo-verl train
                  compose_verl(lines).actor_rollout_ref.actor):  # python -m verl.trainer.main_ppo  # fmt: skip
        loss = omega_conf_to_dataclass(actor).policy_loss
        assert (loss.loss_mode, loss.fspo_adaptive_prior_exponent, loss.fspo_target_clip_rate) == ("fspo_adaptive", 0.9, 0.1)
    assert cli(["validate", "algorithm=fspo_adaptive", *lines]) == 0, capsys.readouterr().err[-3000:]


def test_a_down_sampled_pilots_share_counts_the_kept_samples(tmp_path, capsys):
    path = _write_pilot(tmp_path, 0.9, PODS_GEOMETRY)
    assert cli(["fairness", "calibrate", "--target", "0.1", "--run", str(path), "--fit-exponent"]) == 0
    text = capsys.readouterr().out
    assert "off-policy share 0.5" in text and "beta = 0.900" in text, text


def test_a_pilot_with_one_update_a_step_is_refused(tmp_path, capsys):
    path = _write_pilot(tmp_path, 0.9, ONE_UPDATE_GEOMETRY)
    assert cli(["fairness", "calibrate", "--target", "0.1", "--run", str(path), "--fit-exponent"]) == 2
    assert "one update a step, all on-policy" in capsys.readouterr().err


def test_a_pilot_of_another_loss_is_refused(tmp_path, capsys):
    path = _write_pilot(tmp_path, 0.5)
    path.write_text(path.read_text().replace("actor/fspo/", "actor/gspo/"))
    assert cli(["fairness", "calibrate", "--target", "0.1", "--run", str(path), "--fit-exponent"]) == 2
    assert "needs a pilot run of algorithm=fspo" in capsys.readouterr().err
