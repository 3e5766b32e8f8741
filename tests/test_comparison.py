"""The real-run comparison's aggregation (fspo_verl.diagnostics.comparison): pooled per-bin clip rates, sparse
bins, the spread and FSPO-vs-GSPO verdict, checked against hand-computed numbers; outputs from realistic logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _verl_run_log import write_run
from test_plotting import assert_valid_png

from fspo_verl.diagnostics import comparison

BINS = ("len_0_4", "len_4_8", "len_8_inf")


def _log(path: Path, prefix: str, steps: dict[int, tuple[tuple, tuple, float]]) -> str:
    """A verl file-logger JSONL: per step (seqs per bin, clipped per bin, reward); a step-0 validation line."""
    lines = [{"step": 0, "data": {"val-core/task/acc/mean@1": 0.0}}]
    for step, (seqs, clipped, reward) in steps.items():
        data = {"critic/score/mean": reward, "actor/pg_clipfrac": 0.5}
        for name, s, c in zip(BINS, seqs, clipped):
            data[f"{prefix}/seqs_{name}"] = s
            data[f"{prefix}/clipped_{name}"] = c
        lines.append({"step": step, "data": data})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


@pytest.fixture
def runs(tmp_path) -> dict[str, list[str]]:
    return {
        "fspo": [
            _log(tmp_path / "fspo_1.jsonl", "actor/fspo", {1: ((4, 2, 0), (1, 1, 0), 0.1), 2: ((2, 2, 0), (1, 0, 0), 0.3)}),
            _log(tmp_path / "fspo_2.jsonl", "actor/fspo", {1: ((2, 4, 0.1), (0, 1, 0.1), 0.5)}),
        ],
        "gspo": [_log(tmp_path / "gspo_1.jsonl", "actor/gspo", {1: ((4, 4, 4), (4, 2, 0), 0.2), 2: ((4, 4, 4), (2, 0, 0), 0.4)})],
    }


def test_pooled_rates_spread_and_rewards_match_hand_computed_numbers(runs):
    summary = comparison.summarize(runs)
    fspo, gspo = summary["methods"]["fspo"], summary["methods"]["gspo"]
    # fspo pooled over both seeds and all steps: seqs (8, 8, 0.1), clipped (2, 2, 0.1), total 16.1
    assert [b["seqs"] for b in fspo["bins"]] == pytest.approx([8, 8, 0.1])
    assert [b["rate"] for b in fspo["bins"]] == pytest.approx([0.25, 0.25, 1.0])
    assert [b["share"] for b in fspo["bins"]] == pytest.approx([8 / 16.1, 8 / 16.1, 0.1 / 16.1])
    assert [b["dense"] for b in fspo["bins"]] == [True, True, False]  # 0.6% < 2%: left out of the spread
    assert fspo["spread"] == 0.0
    assert fspo["overall_rate"] == pytest.approx(4.1 / 16.1)
    assert fspo["prefix"] == "actor/fspo" and fspo["steps"] == 1
    # rewards: per step the mean over seeds; first/last 5 steps per seed, then the mean over seeds
    assert fspo["reward_curve"] == pytest.approx({1: 0.3, 2: 0.3})
    assert fspo["reward_first5"] == pytest.approx((0.2 + 0.5) / 2)
    # gspo: seqs (8, 8, 8), clipped (6, 2, 0) -> rates 0.75, 0.25, 0
    assert [b["rate"] for b in gspo["bins"]] == pytest.approx([0.75, 0.25, 0.0])
    assert gspo["spread"] == pytest.approx(0.75)
    assert summary["fspo_vs_gspo"]["ratio"] == 0.0 and summary["fspo_vs_gspo"]["holds"] is True


def test_first_step_and_sparse_threshold_change_the_pool(runs):
    late = comparison.summarize(runs, first_step=2)["methods"]["fspo"]  # run 1's step 2 only: (2, 2, 0), (1, 0, 0)
    assert [b["rate"] for b in late["bins"]] == [0.5, 0.0, None]  # an empty bin has no rate
    assert late["spread"] == 0.5
    loose = comparison.summarize(runs, min_share=0.001)["methods"]["fspo"]  # now the 0.6% bin counts
    assert loose["spread"] == pytest.approx(0.75)


def test_a_single_dense_bin_has_no_spread(tmp_path):
    one_bin = {"gspo": [_log(tmp_path / "g.jsonl", "actor/gspo", {1: ((8, 0, 0), (2, 0, 0), 0.0)})]}
    summary = comparison.summarize(one_bin)
    assert summary["methods"]["gspo"]["spread"] is None
    assert "fewer than 2 dense bins" in comparison.markdown_table(summary)


def test_markdown_table_shows_rates_sparse_bins_and_the_verdict(runs):
    table = comparison.markdown_table(comparison.summarize(runs))
    assert "| fspo | 0.250 | 0.250 | (1.000) | 0.000 |" in table
    assert "| gspo | 0.750 | 0.250 | 0.000 | 0.750 |" in table
    assert "expected fspo spread <= 0.05 and <= 0.333 x gspo spread: holds." in table


def test_runs_with_other_bins_or_no_counts_are_rejected(runs, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"step": 1, "data": {"actor/gspo/seqs_len_0_256": 1.0, "actor/gspo/clipped_len_0_256": 0.0}}) + "\n")
    with pytest.raises(ValueError, match="different length bins"):
        comparison.summarize({**runs, "gspo": [str(other)]})
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"step": 1, "data": {"actor/pg_clipfrac": 0.1}}) + "\n")
    with pytest.raises(ValueError, match="exactly one loss"):
        comparison.summarize({"grpo": [str(bare)]})


def test_cli_writes_figures_json_and_table_from_realistic_logs(tmp_path, capsys):
    fspo, _ = write_run(tmp_path / "fspo.jsonl", loss_mode="fspo", seed=1)
    sspo, _ = write_run(tmp_path / "sspo.jsonl", loss_mode="sspo", seed=2)
    out = tmp_path / "cmp"
    assert comparison.main(["--run", f"fspo={fspo}", "--run", f"sspo={sspo}", "--out", str(out)]) == 0
    assert "| fspo |" in capsys.readouterr().out
    for name in ("clip_rate_by_length.png", "reward.png"):
        assert_valid_png(out / name)
    saved = json.loads((out / "comparison.json").read_text())
    assert set(saved["methods"]) == {"fspo", "sspo"} and "fspo_vs_gspo" not in saved
    with pytest.raises(SystemExit):
        comparison.main(["--run", "fspo", "--out", str(out)])
