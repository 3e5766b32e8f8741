"""The per-step length-fairness numbers (fspo_verl/diagnostics/fairness_number.py) and their Tracking.log hook."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fspo_verl.diagnostics.fairness_number import (
    installed,
    length_fairness,
    step_fairness,
)


def test_hand_computed():
    # n = (10, 30, 0, 60), c = (1, 6, 0, 30): the empty bin drops out; w = (.1, .3, .6), r = (.1, .2, .5)
    # r = .01 + .06 + .30 = .37; sd = sqrt(.1*.27^2 + .3*.17^2 + .6*.13^2) = sqrt(.0261) = 0.161554944
    # cv = sd / .37 = 0.436635, LRE = sd / (1 - .37) = 0.256436
    out = length_fairness([10, 30, 0, 60], [1, 6, 0, 30])
    assert out["clip_rate_sd_across_bins"] == pytest.approx(0.161554944, abs=1e-9)
    assert out["clip_rate_cv_across_bins"] == pytest.approx(0.436635, abs=1e-6)
    assert out["length_reweighting_error"] == pytest.approx(0.256436, abs=1e-6)


@pytest.mark.parametrize(
    ("seqs", "clipped"),
    [([], []), ([0, 0, 0], [0, 0, 0]), ([5, 0], [2, 0]), ([4, 8], [0, 0]), ([4, 8], [4, 8]), ([4, float("nan")], [1, 1])],
)
def test_degenerate_steps_give_zero_never_nan(seqs, clipped):
    assert length_fairness(seqs, clipped) == {
        "length_reweighting_error": 0.0, "clip_rate_sd_across_bins": 0.0, "clip_rate_cv_across_bins": 0.0
    }  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 500), st.floats(0, 1)), min_size=1, max_size=8),
    scale=st.floats(0.01, 100),
)
def test_scale_free_finite_and_zero_exactly_when_rates_are_equal(counts, scale):
    seqs = [float(n) for n, _ in counts]
    clipped = [float(round(n * f)) for n, f in counts]
    out = length_fairness(seqs, clipped)
    assert all(math.isfinite(v) and v >= 0 for v in out.values())
    scaled = length_fairness([scale * n for n in seqs], [scale * c for c in clipped])  # means of counts, any scale
    for key, value in out.items():
        assert scaled[key] == pytest.approx(value, rel=1e-9, abs=1e-12)
    rates = {c / n for n, c in zip(seqs, clipped) if n > 0}
    assert (out["clip_rate_sd_across_bins"] < 1e-12) == (len(rates) <= 1)


def test_step_fairness_per_prefix_from_logged_counts():
    metrics = {
        "actor/fspo/seqs_len_0_8": 10.0, "actor/fspo/clipped_len_0_8": 1.0,
        "actor/fspo/seqs_len_8_inf": 30.0, "actor/fspo/clipped_len_8_inf": 6.0,
        "actor/gspo/seqs_len_0_8": 5.0, "actor/gspo/clipped_len_0_8": 1.0,
        "actor/pg_clipfrac": 0.2,
    }  # fmt: skip
    out = step_fairness(metrics)
    assert set(out) == {f"actor/{p}/{n}" for p in ("fspo", "gspo") for n in
                        ("length_reweighting_error", "clip_rate_sd_across_bins", "clip_rate_cv_across_bins")}  # fmt: skip
    # fspo: w = (.25, .75), r = (.1, .2), r = .175, sd = sqrt(.25*.075^2 + .75*.025^2) = 0.043301270
    assert out["actor/fspo/clip_rate_sd_across_bins"] == pytest.approx(0.043301270, abs=1e-9)
    assert out["actor/gspo/length_reweighting_error"] == 0.0  # one bin
    assert step_fairness({"actor/pg_clipfrac": 0.1}) == {}


def test_verls_tracking_log_carries_the_numbers_to_the_file_logger(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    from verl.utils.tracking import Tracking

    assert installed()  # the plugin wrapped Tracking.log on import
    tracking = Tracking(project_name="p", experiment_name="e", default_backend=["file"])
    tracking.log(data={"actor/fspo/seqs_len_0_8": 10.0, "actor/fspo/clipped_len_0_8": 1.0,
                       "actor/fspo/seqs_len_8_inf": 30.0, "actor/fspo/clipped_len_8_inf": 6.0}, step=1)  # fmt: skip
    tracking.finish()
    logged = json.loads(path.read_text().splitlines()[-1])
    data = logged.get("data", logged)
    assert data["actor/fspo/clip_rate_sd_across_bins"] == pytest.approx(0.043301270, abs=1e-9)
    assert data["actor/fspo/seqs_len_0_8"] == 10.0  # verl's own metrics pass through unchanged
