"""End to end on CPU: the default demo task (data=countdown_cpu) through verl's real V1 trainer, with FSPO at
the band and length bins the preset sets. Two steps: the answers' lengths fill most length bins in every step,
and the warm-started model earns a reward that is neither ~0 nor ~1. And ``fspo-verl train algorithm=pods``
on it, as a user launches it, with the mini-batch derived from n and keep."""

from __future__ import annotations

import pytest
import yaml

from e2e.cpu_run import (
    FSPO,
    assert_finite,
    assert_succeeded,
    fspo_verl_train,
    run_cpu_demo,
)
from fspo_verl.analysis.run_log import read_run
from fspo_verl.demo.overrides import task_policy_loss
from fspo_verl.losses.length_bins import bin_names

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DATA = "countdown_cpu"


@pytest.fixture(scope="module")
def cache_dir(built_demo_cache):
    return built_demo_cache  # the session's demo assets (tests/conftest.py)


def test_countdown_fills_length_bins_with_a_graded_reward(tmp_path_factory, cache_dir):
    task = task_policy_loss(DATA)
    extra = [
        *FSPO,
        *(f"++actor_rollout_ref.actor.policy_loss.{key}={value}".replace(" ", "") for key, value in task.items()),
        "trainer.val_before_train=false",
        "trainer.save_freq=-1",
        "trainer.test_freq=2",
    ]
    run_dir = tmp_path_factory.mktemp("countdown_run")
    result = run_cpu_demo(run_dir, cache_dir, steps=2, extra=extra, data=DATA)
    assert_succeeded(result)
    assert sorted(result.metrics) == [1, 2]
    seqs = [f"actor/fspo/seqs_len_{name.removeprefix('len_')}" for name in bin_names(task["length_bins"])]
    assert_finite(result.metrics, ["critic/score/mean", "actor/pg_loss", *seqs])
    for step in (1, 2):
        metrics = result.metrics[step]
        filled = [key for key in seqs if metrics[key] > 0]
        assert len(filled) >= 4, {key: metrics[key] for key in seqs}
        assert 0.1 < metrics["critic/score/mean"] < 0.9, metrics["critic/score/mean"]  # partial, graded reward
        assert metrics["response_length/max"] > 64 and metrics["response_length/min"] < 8
        # the rollout's response length follows data.max_response_length (160): nothing is cut at 4 tokens
        assert metrics["response_length/max"] <= 160
    val = [key for key in result.metrics[2] if key.startswith("val-core/fspo_countdown/")]
    assert val and all(0.0 <= result.metrics[2][key] <= 1.0 for key in val), val


def test_the_pods_preset_trains_on_the_default_task(tmp_path, cache_dir):
    """algorithm=pods (64 samples per prompt, keep the 16 of maximal reward variance) on countdown, which the
    driver rejected while the task's mini-batch was a hand-set 8: 8 prompts x 16 kept = 128 samples per update
    need ppo_mini_batch_size = 8 x 16 / 64 = 2, two updates per step, as without down-sampling."""
    run = tmp_path / "run"
    # one step: 16 prompts x 64 samples of up to 160 tokens is the suite's most expensive generation, and a
    # second step repeats the same checks
    proc = fspo_verl_train(["algorithm=pods", "trainer.total_training_steps=1", "trainer.val_before_train=false",
                            "trainer.test_freq=-1", "trainer.save_freq=-1", f"hydra.run.dir={run}"], tmp_path, cache_dir)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    config = yaml.safe_load((run / "config_0.yaml").read_text())
    assert config["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"] == 2
    metrics = read_run(run / "metrics_0.jsonl")
    assert sorted(metrics) == [1]
    prompts, n, keep = config["data"]["train_batch_size"], 64, 16
    for step in (1,):
        values = metrics[step]
        assert values["pods/kept"] == prompts * keep and values["pods/dropped"] == prompts * (n - keep)
        assert values["pods/group_reward_var_after"] >= values["pods/group_reward_var_before"] - 1e-9
        assert 0.0 < values["critic/score/mean"] < 1.0
