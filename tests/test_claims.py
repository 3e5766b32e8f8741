"""fspo_verl.analysis.claims: per-run numbers written out by hand, the seed statistics and the noise rule,
and the claim tables from synthetic run directories laid out as recipes/claims_cpu.sh writes them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fspo_verl.analysis import claims
from fspo_verl.analysis.claims import (
    Stat,
    compare,
    stat,
    summarize_run,
    updates_per_step,
)


def _config(n: int, prompts: int, mini: int, keep: int | None = None, epochs: int = 1) -> dict:
    sampler = {"custom_sampler": {"path": "pkg://fspo_verl.pods", "name": "PODSReplayBuffer"},
               "sampler_kwargs": {"rule": "max_variance", "keep": keep}} if keep else {"custom_sampler": {"path": None}}  # fmt: skip
    return {
        "actor_rollout_ref": {"rollout": {"n": n}, "actor": {"ppo_mini_batch_size": mini, "ppo_epochs": epochs}},
        "data": {"train_batch_size": prompts},
        "trainer": {"v1": {"sampler": sampler}},
    }


def _write_run(folder: Path, steps: dict[int, dict[str, float]], config: dict) -> Path:
    folder.mkdir(parents=True)
    with (folder / "metrics_0.jsonl").open("w") as fh:
        for step, data in steps.items():
            fh.write(json.dumps({"step": step, "data": data}) + "\n")
    (folder / "config_0.yaml").write_text(yaml.safe_dump(config))
    return folder


def _grpo_steps(reward: list[float], kl: float = 0.02, entropy: float = 0.7) -> dict[int, dict[str, float]]:
    steps = {0: {"val-core/countdown/acc/mean@1": 0.2}}
    for s, r in enumerate(reward, start=1):
        steps[s] = {"critic/score/mean": r, "response_length/mean": 10.0 + 2 * (s - 1) + (4 if s == 4 else 0),
                    "timing_s/step": float(s), "timing_s/gen": 0.5, "timing_s/update_actor": 0.25,
                    "actor/ppo_kl": kl, "actor/entropy": entropy + 0.1 * (4 - s), "actor/grad_norm": float(s)}  # fmt: skip
    steps[4]["val-core/countdown/acc/mean@1"] = 0.5
    return steps


def test_updates_per_step_counts_kept_samples_against_the_mini_batch() -> None:
    # 8 prompts x 4 samples, mini-batch 4 prompts x n: 2 updates; 2 epochs: 4
    assert updates_per_step(_config(n=4, prompts=8, mini=4)) == 2
    assert updates_per_step(_config(n=4, prompts=8, mini=4, epochs=2)) == 4
    # PODS 1 of 4 kept, mini-batch 1 (x n = 4 samples = 4 prompts' kept samples): 8 kept / 4 = 2 updates
    assert updates_per_step(_config(n=4, prompts=8, mini=1, keep=1)) == 2
    # the countdown geometry: 16 prompts, n=16, keep 4, mini 2 (2 x 16 = 32 = 8 prompts x 4): 2 updates
    assert updates_per_step(_config(n=16, prompts=16, mini=2, keep=4)) == 2
    # exact on-policy: the mini-batch is the whole batch
    assert updates_per_step(_config(n=16, prompts=8, mini=8)) == 1


def test_summarize_run_by_hand(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "grpo" / "seed1", _grpo_steps([0.1, 0.2, 0.3, 0.6]), _config(n=4, prompts=8, mini=4))
    summary, _ = summarize_run(run)
    # 4 steps: the windows are ceil(4/4) = 1 step each
    assert summary.steps == 4 and summary.updates == 8
    assert summary.reward_early == pytest.approx(0.1) and summary.reward_late == pytest.approx(0.6)
    assert summary.reward_gain == pytest.approx(0.5)
    # lengths 10, 12, 14, 20
    assert (summary.length_early, summary.length_late, summary.length_growth) == (10.0, 20.0, 10.0)
    assert summary.val_first == 0.2 and summary.val_last == 0.5
    assert summary.wall_s == 1 + 2 + 3 + 4
    assert summary.phase_s == {"gen": 0.5, "update_actor": 0.25}
    assert summary.ppo_kl == pytest.approx(0.02)
    assert summary.entropy_late == pytest.approx(0.7)  # entropies 1.0, 0.9, 0.8, 0.7
    assert summary.grad_norm_mean == 2.5 and summary.grad_norm_sd == pytest.approx(math.sqrt(5 / 3))  # 1, 2, 3, 4


def test_downsampled_runs_read_the_policys_reward_and_length_over_all_n(tmp_path: Path) -> None:
    steps = _grpo_steps([0.9, 0.9, 0.9, 0.9])  # critic/score/mean: the kept m (biased by the rule)
    for s, before in zip(range(1, 5), [0.1, 0.2, 0.3, 0.4], strict=True):
        steps[s].update({"pods/reward_mean_before": before, "pods/response_length_before": 100.0 * s})
    summary, _ = summarize_run(_write_run(tmp_path / "pods" / "seed1", steps, _config(n=4, prompts=8, mini=1, keep=1)))
    assert (summary.reward_early, summary.reward_late) == (0.1, 0.4)
    assert (summary.length_early, summary.length_late) == (100.0, 400.0)
    assert summary.updates == 4 * 2


def test_windows_are_a_quarter_of_the_steps_rounded_up(tmp_path: Path) -> None:
    # 5 steps: windows of ceil(5/4) = 2 steps
    steps = _grpo_steps([0.0, 0.2, 0.4, 0.6])
    steps[5] = dict(steps[4], **{"critic/score/mean": 1.0})
    summary, _ = summarize_run(_write_run(tmp_path / "r", steps, _config(n=4, prompts=8, mini=4)))
    assert summary.reward_early == pytest.approx(0.1) and summary.reward_late == pytest.approx(0.8)


def test_stat_and_the_noise_rule_by_hand() -> None:
    s = stat([0.5, 0.7, None])
    assert s.mean == pytest.approx(0.6) and s.sd == pytest.approx(math.sqrt(0.02)) and s.n == 2
    assert stat([]).mean is None and stat([0.3]).sd is None
    a, b = Stat(1.0, 0.1, 3), Stat(0.8, 0.1, 3)
    # se = sqrt(0.01/3 + 0.01/3) = 0.08165; 2 se = 0.1633 < d = 0.2
    assert compare(a, b) == "beats" and compare(b, a) == "loses"
    assert compare(Stat(0.95, 0.1, 3), b) == "within noise"  # d = 0.15 < 0.1633
    assert compare(a, b, higher_is_better=False) == "loses"
    assert compare(Stat(None, None, 0), b) == "not measured"
    # no spread at all: any difference decides
    assert compare(Stat(0.5, 0.0, 3), Stat(0.4, 0.0, 3)) == "beats"


@given(
    st.floats(-10, 10), st.floats(0, 2), st.integers(1, 5),
    st.floats(-10, 10), st.floats(0, 2), st.integers(1, 5),
)  # fmt: skip
def test_compare_is_antisymmetric_and_the_direction_flips_it(ma, sa, na, mb, sb, nb) -> None:
    a, b = Stat(ma, sa, na), Stat(mb, sb, nb)
    mirror = {"beats": "loses", "loses": "beats", "within noise": "within noise"}
    assert compare(b, a) == mirror[compare(a, b)]
    assert compare(a, b, higher_is_better=False) == mirror[compare(a, b)]


def _claim_dirs(root: Path, variants: dict[str, list[list[float]]], keep: int | None = None) -> None:
    for variant, seeds in variants.items():
        for k, reward in enumerate(seeds, start=1):
            steps = _grpo_steps(reward)
            config = _config(n=4, prompts=8, mini=4)
            if variant != "grpo" and keep:
                for s, r in enumerate(reward, start=1):
                    steps[s]["pods/reward_mean_before"] = r
                config = _config(n=4, prompts=8, mini=1, keep=keep)
            _write_run(root / variant / f"seed{k}", steps, config)


def test_a_pods_claim_from_run_directories(tmp_path: Path) -> None:
    # late rewards (last step of 4): grpo 0.50/0.52/0.54, max-variance 0.70/0.72/0.74, random 0.51/0.53/0.55
    _claim_dirs(tmp_path / "runs", {
        "grpo": [[0.1, 0.2, 0.3, 0.50], [0.1, 0.2, 0.3, 0.52], [0.1, 0.2, 0.3, 0.54]],
        "pods_max_variance": [[0.1, 0.2, 0.3, 0.70], [0.1, 0.2, 0.3, 0.72], [0.1, 0.2, 0.3, 0.74]],
        "pods_random": [[0.1, 0.2, 0.3, 0.51], [0.1, 0.2, 0.3, 0.53], [0.1, 0.2, 0.3, 0.55]],
    }, keep=1)  # fmt: skip
    summary = claims.write_claim("pods", tmp_path / "runs", tmp_path / "out", ["grpo", "pods_max_variance", "pods_random"])
    stats = summary["variants"]["pods_max_variance"]["stats"]
    assert stats["reward_late"]["mean"] == pytest.approx(0.72) and stats["reward_late"]["sd"] == pytest.approx(0.02)
    assert stats["updates"]["mean"] == 8
    tests = summary["verdict"]["tests"]
    assert tests["pods_max_variance late reward vs grpo"] == "beats"
    assert tests["pods_max_variance late reward vs pods_random"] == "beats"
    # identical timings: neither is faster
    assert tests["pods_max_variance training seconds vs grpo (lower is better)"] == "within noise"
    assert summary["verdict"]["held"] is True
    table = (tmp_path / "out" / "pods.md").read_text()
    assert "| pods_max_variance | 3 | 8 ± 0 | 0.100 ± 0.000 | 0.720 ± 0.020 |" in table
    assert "Claim held: **yes**" in table
    assert (tmp_path / "out" / "pods.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "pods.json").read_text())["verdict"]["held"] is True


def test_a_claim_within_noise_does_not_hold(tmp_path: Path) -> None:
    _claim_dirs(tmp_path / "runs", {
        "grpo": [[0.1, 0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.7], [0.1, 0.2, 0.3, 0.6]],
        "pods_max_variance": [[0.1, 0.2, 0.3, 0.55], [0.1, 0.2, 0.3, 0.75], [0.1, 0.2, 0.3, 0.65]],
    }, keep=1)  # fmt: skip
    summary, _ = claims.summarize_claim("pods", tmp_path / "runs", ["grpo", "pods_max_variance"])
    assert summary["verdict"]["tests"]["pods_max_variance late reward vs grpo"] == "within noise"
    assert summary["verdict"]["held"] is False


def test_missing_runs_and_a_missing_baseline_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert claims.main(["--claim", "gfpo", "--runs", str(tmp_path), "--out", str(tmp_path / "o"),
                        "--variants", "grpo", "gfpo_shortest"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("claims: ") and "grpo: no run" in err and "recipes/claims_cpu.sh" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="compares against 'grpo'"):
        claims.summarize_claim("opo", tmp_path, ["opo"])


def _gfpo_dirs(root: Path, grpo_lengths: list[float], gfpo_lengths: list[float]) -> None:
    for variant, lengths in (("grpo", grpo_lengths), ("gfpo_shortest", gfpo_lengths)):
        for k in (1, 2, 3):
            steps = _grpo_steps([0.1, 0.2, 0.3, 0.5 + 0.01 * k])
            for s, length in enumerate(lengths, start=1):
                steps[s]["response_length/mean"] = length + k
            _write_run(root / variant / f"seed{k}", steps, _config(n=4, prompts=8, mini=4))


def test_gfpo_cut_of_length_growth_by_hand(tmp_path: Path) -> None:
    # growth (last step minus first): grpo 40 - 20 = 20 tokens, gfpo 25 - 20 = 5: a cut of 1 - 5/20 = 75%
    _gfpo_dirs(tmp_path, [20, 25, 30, 40], [20, 21, 22, 25])
    summary, _ = claims.summarize_claim("gfpo", tmp_path, ["grpo", "gfpo_shortest"])
    verdict = summary["verdict"]
    assert verdict["length_growth_cut_vs_grpo"]["gfpo_shortest"] == pytest.approx(0.75)
    assert verdict["tests"]["gfpo_shortest late length vs grpo (lower is better)"] == "beats"
    assert verdict["tests"]["gfpo_shortest late reward vs grpo"] == "within noise"  # the same rewards
    assert verdict["held"] is True
    assert "length growth cut vs grpo: 75%" in claims.markdown(summary)


def test_gfpo_is_not_testable_when_grpo_does_not_grow_the_length(tmp_path: Path) -> None:
    _gfpo_dirs(tmp_path, [40, 35, 30, 28], [40, 30, 25, 20])  # grpo: -12 tokens
    summary, _ = claims.summarize_claim("gfpo", tmp_path, ["grpo", "gfpo_shortest"])
    assert summary["verdict"]["held"] is None
    assert "did not grow (-12.0 tokens" in summary["verdict"]["why_not_testable"]
    assert "Claim held: **not testable here**" in claims.markdown(summary)


def test_reward_within_a_budget_of_training_seconds_by_hand(tmp_path: Path) -> None:
    # step times 1, 2, 3, 4 s; rewards 0.1, 0.2, 0.3, 0.6
    run = claims.read_run(_write_run(tmp_path / "r", _grpo_steps([0.1, 0.2, 0.3, 0.6]), _config(4, 8, 4)) / "metrics_0.jsonl")
    assert claims.reward_within(run, 6.0) == pytest.approx(0.3)  # steps 1-3 (6 s), window ceil(3/4) = 1 step
    assert claims.reward_within(run, 5.9) == pytest.approx(0.2)  # steps 1-2 (3 s)
    assert claims.reward_within(run, 0.5) == pytest.approx(0.1)  # always the first step
    assert claims.reward_within(run, 100.0) == pytest.approx(0.6)


def test_pods_at_equal_wall_clock_uses_the_fastest_variants_budget(tmp_path: Path) -> None:
    # grpo's steps take twice as long (2, 4, 6, 8 s): within pods' 10 s it has done steps 1-2 (6 s; 12 > 10)
    _claim_dirs(tmp_path / "runs", {
        "grpo": [[0.1, 0.2, 0.3, 0.9]] * 3,
        "pods_max_variance": [[0.1, 0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.52], [0.1, 0.2, 0.3, 0.54]],
    }, keep=1)  # fmt: skip
    for k in (1, 2, 3):
        path = tmp_path / "runs" / "grpo" / f"seed{k}" / "metrics_0.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for line in lines:
            if "timing_s/step" in line["data"]:
                line["data"]["timing_s/step"] *= 2
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary, _ = claims.summarize_claim("pods", tmp_path / "runs", ["grpo", "pods_max_variance"])
    assert summary["budget_s"] == 10.0
    grpo, pods = (summary["variants"][v]["stats"]["reward_at_budget"] for v in ("grpo", "pods_max_variance"))
    assert grpo["mean"] == pytest.approx(0.2) and pods["mean"] == pytest.approx(0.52)
    tests = summary["verdict"]["tests"]
    assert tests["pods_max_variance late reward vs grpo"] == "loses"  # equal updates: grpo ahead
    assert tests["pods_max_variance reward at equal training seconds vs grpo"] == "beats"
    assert summary["verdict"]["held"] is True  # no random variant to beat
