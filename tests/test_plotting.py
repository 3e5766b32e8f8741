"""``fspo-verl plot``: PNGs from verl's file-logger JSONL.

The JSONL is written by verl's real ``FileLogger`` with metrics from the real ``fspo`` loss reduced by verl's
``reduce_metrics`` (tests/_verl_run_log.py), so the per-bin rates the plot derives can be checked against
the true clip rate of the drawn sequences.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _verl_run_log import write_run  # noqa: E402

from fspo_verl import cli  # noqa: E402
from fspo_verl.analysis.plotting import clip_rate_series, plot_run  # noqa: E402
from fspo_verl.analysis.run_log import read_run  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path, min_width: int = 400) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pixels = mpimg.imread(path)  # (H, W, 4) floats
    assert pixels.ndim == 3 and pixels.shape[1] >= min_width
    assert float(np.std(pixels[..., :3])) > 0.05, f"{path} looks blank"


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> tuple[Path, dict]:
    return write_run(tmp_path_factory.mktemp("run") / "fixture.jsonl")


def test_fixture_is_verl_file_logger_format(run_file):
    path, _ = run_file
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(rec) == {"step", "data"} for rec in lines)
    assert [rec["step"] for rec in lines] == [0, 1, 2, 3, 4, 5, 6, 6]  # val at 0, train 1..6, final val at 6
    run = read_run(path)
    assert run[6]["val-core/openai/gsm8k/reward/mean@1"] == 0.31  # merged with the step-6 training line
    assert "actor/fspo/clipped_len_4096_inf" in run[6] and "critic/score/mean" in run[6]


def test_per_bin_rates_equal_true_clip_rates(run_file):
    """Mean of counts over micro-batches, divided: the exact rate of the sequences the loss saw."""
    path, truth = run_file
    rates = clip_rate_series(read_run(path))
    assert list(rates) == ["actor/fspo"]
    per_bin = rates["actor/fspo"]
    assert list(per_bin) == ["len_0_256", "len_256_512", "len_512_1024", "len_1024_2048", "len_2048_4096", "len_4096_inf"]
    compared = 0
    for name, (steps, values) in per_bin.items():
        assert steps == [1, 2, 3, 4, 5, 6]
        for step, value in zip(steps, values):
            expected = truth[step][name]
            if expected is None:
                assert math.isnan(value), (step, name)  # an empty bin is a gap, never a made-up 0
            else:
                assert value == pytest.approx(expected, abs=1e-9), (step, name)
                compared += 1
    assert compared >= 15
    # sigma=0.02 against FSPO's default band clips some but not all sequences
    assert 0.0 < np.nanmean([v for _, vals in per_bin.values() for v in vals]) < 1.0


def test_plot_command_writes_three_valid_pngs(run_file, tmp_path, capsys):
    path, _ = run_file
    assert cli.main(["plot", str(path), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    for name in ("reward.png", "response_length.png", "clip_rate_by_length.png"):
        assert f"wrote {tmp_path / 'plots' / name}" in out
        assert_valid_png(tmp_path / "plots" / name)


def test_default_output_folder_sits_next_to_the_run(run_file, tmp_path):
    path, _ = run_file
    copy = tmp_path / "myrun.jsonl"
    copy.write_bytes(path.read_bytes())
    written = plot_run(copy)
    assert all(p is not None and p.parent == tmp_path / "myrun_plots" for p in written.values())


def test_run_without_bin_metrics_skips_that_plot_with_a_reason(tmp_path, capsys):
    log = tmp_path / "grpo.jsonl"
    log.write_text(
        "\n".join(
            json.dumps({"step": s, "data": {"critic/score/mean": 0.1 * s, "response_length/mean": 100.0 + s}})
            for s in range(1, 4)
        )
    )
    assert cli.main(["plot", str(log), "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "skipped clip_rate_by_length.png: no */seqs_len_*" in out and "loss_mode=fspo or sspo" in out
    assert_valid_png(tmp_path / "p" / "reward.png")
    assert not (tmp_path / "p" / "clip_rate_by_length.png").exists()


def test_bad_inputs_fail_with_a_message_naming_the_problem(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "data": {"critic/score/mean": 1}}\nnot json\n')
    assert cli.main(["plot", str(bad)]) == 2
    assert f"{bad}:2: not a verl file-logger line" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["plot", str(empty)]) == 2
    assert "holds no logged step" in capsys.readouterr().err


def test_pooled_rate_per_bin_over_the_run_equals_the_true_pooled_rate(run_file):
    """The right-hand panel's numbers: step s's bin holds N(s)*seqs_b(s)/sum_b' seqs_b'(s) sequences (N(s) from
    verl's token metrics), of which the fixture's true rate were clipped; pooled over steps."""
    from fspo_verl.analysis.plotting import pooled_bin_rates

    path, truth = run_file
    run = read_run(path)
    names = list(clip_rate_series(run)["actor/fspo"])
    pooled = pooled_bin_rates(run, "actor/fspo", names)
    checked = 0
    for name, (n, rate, se) in zip(names, pooled):
        sizes = []
        for s in range(1, 7):
            m = run[s]
            n_seq = m["perf/total_num_tokens"] / (m["prompt_length/mean"] + m["response_length/mean"])
            sizes.append((n_seq * m[f"actor/fspo/seqs_{name}"] / sum(m[f"actor/fspo/seqs_{b}"] for b in names), truth[s][name]))
        if all(r is None for _, r in sizes):
            assert rate is None and se is None and n == 0
            continue
        expected_n = sum(k for k, r in sizes if r is not None)
        expected = sum(k * r for k, r in sizes if r is not None) / expected_n
        assert n == pytest.approx(expected_n) and rate == pytest.approx(expected, abs=1e-9)
        assert se == pytest.approx(math.sqrt(rate * (1 - rate) / n))
        checked += 1
    assert checked >= 3
