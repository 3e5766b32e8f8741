"""The real-run comparison's aggregation (fspo_verl.analysis.comparison): pooled per-bin clip rates, sparse
bins, the spread and FSPO-vs-GSPO verdict, checked against hand-computed numbers; outputs from realistic logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _verl_run_log import write_run
from test_plotting import assert_valid_png

from fspo_verl.analysis import comparison

BINS = ("len_0_4", "len_4_8", "len_8_inf")


def _log(path: Path, prefix: str, steps: dict[int, tuple[tuple, tuple, float, int]]) -> str:
    """A verl file-logger JSONL. Per step: the logged mean count per bin (seqs, clipped), the reward and the
    step's number of sequences N, logged as verl does (prompt 2 + response 3 tokens each); plus a step-0
    validation line without training metrics."""
    lines = [{"step": 0, "data": {"val-core/task/acc/mean@1": 0.0}}]
    for step, (seqs, clipped, reward, n) in steps.items():
        data = {"critic/score/mean": reward, "actor/pg_clipfrac": 0.5, "prompt_length/mean": 2.0,
                "response_length/mean": 3.0, "perf/total_num_tokens": 5.0 * n}  # fmt: skip
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
            _log(tmp_path / "fspo_1.jsonl", "actor/fspo",
                 {1: ((3, 1, 0), (1.5, 0, 0), 0.1, 100), 2: ((1, 3, 0), (0, 1.5, 0), 0.3, 100)}),
            _log(tmp_path / "fspo_2.jsonl", "actor/fspo", {1: ((2, 2, 0), (1, 1, 0), 0.5, 200)}),
        ],
        "gspo": [
            _log(tmp_path / "gspo_1.jsonl", "actor/gspo",
                 {1: ((4, 3.9, 0.1), (4, 1.95, 0), 0.2, 100), 2: ((4, 4, 0), (2, 0, 0), 0.4, 100)}),
        ],
    }  # fmt: skip


def test_pooled_rates_spread_and_rewards_match_hand_computed_numbers(runs):
    summary = comparison.summarize(runs, min_seqs=50)
    fspo, gspo = summary["methods"]["fspo"], summary["methods"]["gspo"]
    # fspo, sequences per bin: run 1 step 1 100*(3,1,0)/4 = (75,25,0), step 2 (25,75,0); run 2 200*(2,2,0)/4
    # = (100,100,0); total (200,200,0). Clipped: (37.5,0,0) + (0,37.5,0) + (50,50,0) = (87.5,87.5,0)
    assert [b["seqs"] for b in fspo["bins"]] == pytest.approx([200, 200, 0])
    assert [b["clipped"] for b in fspo["bins"]] == pytest.approx([87.5, 87.5, 0])
    assert [b["rate"] for b in fspo["bins"]] == pytest.approx([0.4375, 0.4375, None])
    assert fspo["bins"][0]["se"] == pytest.approx((0.4375 * 0.5625 / 200) ** 0.5)
    assert [b["dense"] for b in fspo["bins"]] == [True, True, False]  # an empty bin has no rate
    assert fspo["spread"] == 0.0
    assert fspo["overall_rate"] == pytest.approx(175 / 400)
    assert fspo["prefix"] == "actor/fspo" and fspo["steps"] == 1
    # rewards: per step the mean over seeds; first/last 5 steps per seed, then the mean over seeds
    assert fspo["reward_curve"] == pytest.approx({1: 0.3, 2: 0.3})
    assert fspo["reward_first5"] == pytest.approx((0.2 + 0.5) / 2)
    # gspo: step 1 100*(4,3.9,0.1)/8 = (50,48.75,1.25), clipped 100*(4,1.95,0)/8 = (50,24.375,0); step 2
    # (50,50,0), clipped (25,0,0). Rates 75/100, 24.375/98.75, 0/1.25; the last bin is sparse (1.25 < 50)
    assert [b["seqs"] for b in gspo["bins"]] == pytest.approx([100, 98.75, 1.25])
    assert [b["rate"] for b in gspo["bins"]] == pytest.approx([0.75, 24.375 / 98.75, 0.0])
    assert [b["dense"] for b in gspo["bins"]] == [True, True, False]
    assert gspo["spread"] == pytest.approx(0.75 - 24.375 / 98.75)
    assert summary["fspo_vs_gspo"]["ratio"] == 0.0 and summary["fspo_vs_gspo"]["holds"] is True


def test_first_step_and_sparse_threshold_change_the_pool(runs):
    late = comparison.summarize(runs, min_seqs=20, first_step=2)["methods"]["fspo"]  # run 1 step 2 only
    assert [b["seqs"] for b in late["bins"]] == pytest.approx([25, 75, 0])
    assert [b["rate"] for b in late["bins"]] == [0.0, 0.5, None]
    assert late["spread"] == 0.5
    loose = comparison.summarize(runs, min_seqs=1)["methods"]["gspo"]  # now the 1.25-sequence bin counts
    assert loose["spread"] == pytest.approx(0.75)
    strict = comparison.summarize(runs)["methods"]["gspo"]  # default 400: no bin is dense
    assert not any(b["dense"] for b in strict["bins"]) and strict["spread"] is None


def test_a_single_dense_bin_has_no_spread(tmp_path):
    one_bin = {"gspo": [_log(tmp_path / "g.jsonl", "actor/gspo", {1: ((8, 0, 0), (2, 0, 0), 0.0, 512)})]}
    summary = comparison.summarize(one_bin)
    assert summary["methods"]["gspo"]["spread"] is None
    assert summary["methods"]["gspo"]["bins"][0]["rate"] == 0.25
    assert "fewer than 2 dense bins" in comparison.markdown_table(summary)


def test_markdown_table_shows_rates_sparse_bins_and_the_verdict(runs):
    table = comparison.markdown_table(comparison.summarize(runs, min_seqs=50))
    assert "| fspo | 0.438 | 0.438 | - | 0.000 |" in table
    assert "| gspo | 0.750 | 0.247 | (0.000) | 0.503 |" in table
    assert "expected fspo spread <= 0.05 and <= 0.333 x gspo spread: holds." in table


def test_runs_with_other_bins_or_no_counts_are_rejected(runs, tmp_path):
    other = tmp_path / "other.jsonl"
    step = {"actor/gspo/seqs_len_0_256": 1.0, "actor/gspo/clipped_len_0_256": 0.0, "perf/total_num_tokens": 50.0,
            "prompt_length/mean": 2.0, "response_length/mean": 3.0}  # fmt: skip
    other.write_text(json.dumps({"step": 1, "data": step}) + "\n")
    with pytest.raises(ValueError, match="different length bins"):
        comparison.summarize({**runs, "gspo": [str(other)]})
    no_count = tmp_path / "no_count.jsonl"
    no_count.write_text(json.dumps({"step": 1, "data": {"actor/fspo/seqs_len_0_4": 1.0, "actor/fspo/clipped_len_0_4": 0.0}}) + "\n")
    with pytest.raises(ValueError, match="lacks perf/total_num_tokens"):
        comparison.summarize({"fspo": [str(no_count)]})
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
    for name in ("clip_rate_by_length.png", "reward.png", "length_reweighting_error.png"):
        assert_valid_png(out / name)
    saved = json.loads((out / "comparison.json").read_text())
    assert set(saved["methods"]) == {"fspo", "sspo"} and "fspo_vs_gspo" not in saved
    # the per-step LRE from each step's counts, as fairness_number computes it, averaged over the one seed
    from fspo_verl.analysis.run_log import read_run
    from fspo_verl.diagnostics.fairness_number import step_fairness

    logged = read_run(fspo)
    for step, value in saved["methods"]["fspo"]["lre_curve"].items():
        assert value == pytest.approx(step_fairness(logged[int(step)])["actor/fspo/length_reweighting_error"])
    assert saved["methods"]["fspo"]["lre_mean"] > 0
    with pytest.raises(SystemExit):
        comparison.main(["--run", "fspo", "--out", str(out)])


def test_recipe_composes_every_run_with_the_same_seed_steps_and_bins(tmp_path, built_demo_cache):
    """recipes/compare_cpu.sh in validate mode: each method's run config is composed and checked by the
    launcher, with the seed, step budget and length bins the comparison needs."""
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "recipes" / "compare_cpu.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "FSPO_VERL_COMMAND": "validate",
           "METHODS": "fspo grpo", "SEEDS": "7", "STEPS": "3", "LENGTH_BINS": "[2,3]", "OUT": str(tmp_path)}  # fmt: skip
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fspo-verl validate: OK (2 job(s))" in proc.stderr
    jobs = (tmp_path / "runs" / "validate.txt").read_text().split("# job ")[1:]
    assert [job.splitlines()[0].split()[:3] for job in jobs] == [["0:", "algorithm=fspo", "data.seed=7"],
                                                                 ["1:", "algorithm=grpo", "data.seed=7"]]
    for resolved, loss in zip(jobs, ("fspo", "vanilla")):
        assert f"loss_mode: {loss}" in resolved and "length_bins:\n      - 2\n      - 3\n" in resolved
        assert "total_training_steps: 3" in resolved and "  seed: 7\n" in resolved


def test_a_sweep_is_read_from_its_jobs_json_grouped_by_algorithm(runs, tmp_path, capsys):
    """``--sweep``: the jobs.json of ``fspo-verl train -m`` (as the checked sweeper writes it) gives the same
    comparison as naming the runs; a failed job is an error that names it."""
    jobs = [
        {"job": 0, "overrides": ["algorithm=fspo", "data.seed=1"], "status": "ok", "metrics": runs["fspo"][0]},
        {"job": 1, "overrides": ["algorithm=fspo", "data.seed=2"], "status": "ok", "metrics": runs["fspo"][1]},
        {"job": 2, "overrides": ["algorithm=gspo", "data.seed=1"], "status": "ok", "metrics": runs["gspo"][0]},
    ]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "jobs.json").write_text(json.dumps(jobs))
    assert comparison.runs_from_sweep(sweep) == runs
    assert comparison.main(["--sweep", str(sweep), "--out", str(tmp_path / "cmp")]) == 0
    assert "| gspo |" in capsys.readouterr().out

    jobs.append({"job": 3, "overrides": ["algorithm=gspo", "data.seed=2"], "status": "failed", "error": "RayTaskError: boom"})
    (sweep / "jobs.json").write_text(json.dumps(jobs))
    with pytest.raises(ValueError, match=r"job 3 \(algorithm=gspo data.seed=2\) is failed: RayTaskError: boom"):
        comparison.runs_from_sweep(sweep)
    assert comparison.main(["--sweep", str(sweep), "--out", str(tmp_path / "cmp")]) == 2
    with pytest.raises(FileNotFoundError, match="jobs.json"):
        comparison.runs_from_sweep(tmp_path)


def test_reward_gain_over_seeds_off_policy_rate_and_fspo_adaptive_targets(runs, tmp_path):
    """fspo's two seeds, each shorter than two 5-step windows: run 1 rewards 0.1, 0.3 (first 5 = last 5 = 0.2,
    gain 0), run 2 one step (gain 0): mean 0, sd 0. Ten steps 0.0..0.9 give first 5 = 0.2, last 5 = 0.7, gain 0.5;
    with the 0-gain run, mean 0.25 and sd sqrt(2 * 0.25^2) = 0.3536. An fspo_adaptive run whose config_0.yaml says 64 prompts x 4 / (16 x 4) x 1 epoch
    (4 updates a step, 3 off-policy) and a target of 0.5: off-policy rate = overall / 0.75."""
    summary = comparison.summarize(runs, min_seqs=50)["methods"]["fspo"]
    assert summary["reward_gain"] == pytest.approx(0.0) and summary["reward_gain_sd"] == pytest.approx(0.0)
    ten = _log(tmp_path / "fspo_3.jsonl", "actor/fspo", {s: ((2, 2, 0), (1, 1, 0), (s - 1) / 10, 100) for s in range(1, 11)})
    longer = comparison.summarize({"fspo": [runs["fspo"][1], ten]}, min_seqs=50)["methods"]["fspo"]
    assert longer["reward_gain"] == pytest.approx(0.25) and longer["reward_gain_sd"] == pytest.approx(0.5 / 2**0.5)
    assert summary["offpolicy_share"] is None and summary["offpolicy_rate"] is None  # no config beside the runs
    ada_dir = tmp_path / "ada"
    ada_dir.mkdir()
    path = _log(ada_dir / "metrics_0.jsonl", "actor/fspo_adaptive", {1: ((3, 1, 0), (1.5, 0, 0), 0.1, 100)})
    (ada_dir / "config_0.yaml").write_text(
        "data: {train_batch_size: 64}\nactor_rollout_ref:\n  rollout: {n: 4}\n  actor:\n    ppo_mini_batch_size: 16\n    ppo_epochs: 1\n"
        "    policy_loss: {loss_mode: fspo_adaptive, fspo_target_clip_rate: 0.5}\n")
    result = comparison.summarize({"fspo_adaptive": [path], **runs}, min_seqs=10)
    ada = result["methods"]["fspo_adaptive"]
    # 100*(3,1,0)/4 = (75,25,0) sequences, clipped (37.5,0,0): overall 0.375, spread 0.5
    assert ada["offpolicy_share"] == pytest.approx(0.75) and ada["target_rate"] == 0.5
    assert ada["offpolicy_rate"] == pytest.approx(0.375 / 0.75)
    assert ada["reward_gain_sd"] is None  # one seed
    checks = result["fspo_adaptive_targets"]
    assert checks["spread <= 0.05"] is False
    assert checks["off-policy clip rate within 30% of the target 0.5"] is True
    assert any(k.startswith("spread <= 1/3 x gspo's") for k in checks)


def test_the_config_beside_a_run_is_named_after_its_metrics_file(tmp_path):
    from fspo_verl.analysis.run_log import config_beside

    assert config_beside(tmp_path / "metrics_3.jsonl") == tmp_path / "config_3.yaml"  # fspo-verl train's n-th run
    assert config_beside("runs/metrics_0.jsonl") == Path("runs/config_0.yaml")
    assert config_beside(tmp_path / "experiment.jsonl") is None  # a plain verl file-logger path: no config beside it
