"""End to end on CPU: the default demo task (data=countdown_cpu) through verl's real V1 trainer, with FSPO at
the band and length bins the preset sets. Two steps: the answers' lengths fill most length bins in every step,
and the warm-started model earns a reward that is neither ~0 nor ~1."""

from __future__ import annotations

import pytest

from e2e.cpu_run import FSPO, assert_finite, assert_succeeded, run_cpu_demo
from fspo_verl.demo.overrides import task_policy_loss
from fspo_verl.diagnostics.length_bins import bin_names

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DATA = "countdown_cpu"


def test_countdown_fills_length_bins_with_a_graded_reward(tmp_path_factory, demo_cache):
    task = task_policy_loss(DATA)
    extra = [
        *FSPO,
        *(f"++actor_rollout_ref.actor.policy_loss.{key}={value}".replace(" ", "") for key, value in task.items()),
        "trainer.val_before_train=false",
        "trainer.save_freq=-1",
        "trainer.test_freq=2",
    ]
    run_dir = tmp_path_factory.mktemp("countdown_run")
    result = run_cpu_demo(run_dir, demo_cache, steps=2, extra=extra, data=DATA)
    assert_succeeded(result)
    assert sorted(result.metrics) == [1, 2]
    seqs = [f"actor/fspo/seqs_len_{name.removeprefix('len_')}" for name in bin_names(task["length_bins"])]
    assert_finite(result, ["critic/score/mean", "actor/pg_loss", *seqs])
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
