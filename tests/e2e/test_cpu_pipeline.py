"""End to end on CPU: verl's real V1 trainer (Ray, TransferQueue, FSDP2 over gloo, agent and reward loops,
``hf`` rollout), started by ``python -m verl.trainer.main_ppo``, for a few steps: fspo with weight sync and
resume, a built-in loss's per-bin counts, opo_vectorized on-policy, PODS, and a frozen server as the negative
control of the on-policy check. sspo and fspo_adaptive train in the sweep of tests/e2e/test_hydra_sweep.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.cpu_run import (
    FSPO,
    REWARD_AND_LOSS,
    SYNC,
    assert_finite,
    assert_succeeded,
    length_bin_keys,
    run_cpu_demo,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROMPTS_PER_STEP = 64  # data.train_batch_size of data=synthetic_cpu


@pytest.fixture(scope="module")
def cache_dir(built_demo_cache) -> Path:
    return built_demo_cache  # the session's demo assets (tests/conftest.py)


def test_fspo_trains_syncs_weights_checkpoints_and_resumes(tmp_path, cache_dir):
    extra = [
        *FSPO,
        "trainer.val_before_train=false",
        "trainer.save_freq=2",
        "trainer.test_freq=2",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        # a reference model too: its FSDP2 engine offloads with CPUOffloadPolicy, which must not pin memory
        "actor_rollout_ref.actor.use_kl_loss=true",
    ]
    first = run_cpu_demo(tmp_path, cache_dir, steps=2, extra=extra)
    assert_succeeded(first)
    assert sorted(first.metrics) == [1, 2]
    assert_finite(first.metrics, REWARD_AND_LOSS + SYNC + length_bin_keys("fspo") + ["actor/kl_loss"])
    assert first.metrics[2]["actor/fspo/seqs_len_0_256"] > 0  # every response is shorter than 256 tokens
    assert "val-core/fspo_next_digit/acc/mean@1" in first.metrics[2]
    # on-policy: the server's token probabilities equal the actor's up to fp32 rounding (measured ~1e-7;
    # test_a_frozen_server_is_caught is the negative control)
    for step in (1, 2):
        assert first.metrics[step]["training/rollout_probs_diff_max"] < 1e-4

    # the weights each hf server holds after step 2 are bit-equal to the actor's checkpoint of step 2
    ckpt = tmp_path / "checkpoints" / "global_step_2"
    assert (ckpt / "actor").is_dir()
    from safetensors.torch import load_file

    actor = {}
    for shard in (ckpt / "actor" / "huggingface").glob("*.safetensors"):
        actor.update(load_file(shard))
    from fspo_verl.rollout_hf.server import tensor_digest

    actor_digests = {name: tensor_digest(t) for name, t in actor.items()}
    records = [json.loads(p.read_text()) for p in (tmp_path / "server_digests").glob("replica*_step2.json")]
    assert len(records) == 2  # one server per FSDP worker
    for record in records:
        served = record["digests"]
        shared = set(served) & set(actor_digests)
        assert shared and len(shared) >= len(actor_digests) - 1  # lm_head may be tied to the embedding
        assert {n: served[n] for n in shared} == {n: actor_digests[n] for n in shared}
    before = json.loads((tmp_path / "server_digests" / "replica0_step0.json").read_text())["digests"]
    assert before != records[0]["digests"]  # negative control: training changed the weights

    # `fspo-verl plot` turns this real run's JSONL into the three PNGs, the per-bin clip rate included
    from test_plotting import assert_valid_png

    from fspo_verl.analysis.plotting import plot_run

    written = plot_run(tmp_path / "metrics_0.jsonl", tmp_path / "plots")
    assert sorted(written) == ["clip_rate_by_length.png", "response_length.png", "reward.png"], written
    for name, png in written.items():
        assert png is not None, f"{name} was skipped for a real fspo run"
        assert_valid_png(png)

    # a second run of the same command resumes from global_step_2 and trains step 3 only
    second = run_cpu_demo(tmp_path, cache_dir, steps=3, extra=extra)
    assert_succeeded(second)
    assert sorted(second.metrics) == [3], second.output[-3000:]
    assert (tmp_path / "checkpoints" / "global_step_3" / "actor").is_dir()
    assert_finite(second.metrics, REWARD_AND_LOSS + SYNC)


def test_a_builtin_loss_logs_per_bin_counts_that_agree_with_verls_clipfrac(tmp_path, cache_dir):
    """verl's own cispo with our config class (fspo_verl.diagnostics.loss_hook): the per-bin counts appear in a
    real run. With one-token responses, the share of sequences clipped equals verl's own actor/pg_clipfrac
    (cispo counts tokens outside its band whatever the sign of A), and every micro-batch has the same size,
    so mean(clipped)/mean(seqs) equals the mean of verl's per-micro-batch fractions."""
    extra = [
        "algorithm.adv_estimator=grpo",
        "actor_rollout_ref.actor.policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig",
        "actor_rollout_ref.actor.policy_loss.loss_mode=cispo",
        "actor_rollout_ref.actor.clip_ratio_low=0.002",
        "actor_rollout_ref.actor.clip_ratio_high=0.002",
        "actor_rollout_ref.rollout.response_length=1",
        "data.max_response_length=1",
        "trainer.val_before_train=false",
    ]
    result = run_cpu_demo(tmp_path, cache_dir, steps=2, extra=extra)
    assert_succeeded(result)
    assert_finite(result.metrics, REWARD_AND_LOSS + length_bin_keys("cispo"))
    for step in (1, 2):
        values = result.metrics[step]
        counted = values["actor/cispo/clipped_len_0_256"] / values["actor/cispo/seqs_len_0_256"]
        assert counted == pytest.approx(values["actor/pg_clipfrac"], abs=1e-5), values
    assert result.metrics[2]["actor/cispo/clipped_len_0_256"] > 0  # off-policy mini-batches leave the band


def test_opo_vectorized_runs_on_policy(tmp_path, cache_dir):
    extra = [
        "algorithm.adv_estimator=opo_vectorized",
        # exact on-policy (arXiv 2505.23585): one update per rollout batch, no KL, no entropy bonus
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS_PER_STEP}",
        "actor_rollout_ref.actor.ppo_epochs=1",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "trainer.val_before_train=false",
    ]
    result = run_cpu_demo(tmp_path, cache_dir, steps=2, extra=extra)
    assert_succeeded(result)
    assert sorted(result.metrics) == [1, 2]
    assert_finite(result.metrics, REWARD_AND_LOSS + SYNC + ["critic/advantages/mean"])
    assert result.metrics[2]["actor/pg_clipfrac"] == 0.0  # ratio 1: clipping is inactive on-policy


def test_pods_downsampling_keeps_m_of_n(tmp_path, cache_dir):
    prompts, n, keep = 64, 8, 4
    extra = [
        *FSPO,
        "trainer.v1.sampler.custom_sampler.path=pkg://fspo_verl.pods",
        "trainer.v1.sampler.custom_sampler.name=PODSReplayBuffer",
        "+trainer.v1.sampler.sampler_kwargs.rule=max_variance",
        f"+trainer.v1.sampler.sampler_kwargs.keep={keep}",
        # no ppo_mini_batch_size: the data preset's ${fspo_mini_batch:16} derives 16 x keep / n = 8 (four updates
        # of 16 prompts' kept samples) in verl's own entry point too
        f"actor_rollout_ref.rollout.n={n}",
        f"data.train_batch_size={prompts}",
        "trainer.val_before_train=false",
    ]
    result = run_cpu_demo(tmp_path, cache_dir, steps=2, extra=extra)
    assert_succeeded(result)
    assert sorted(result.metrics) == [1, 2]
    assert_finite(result.metrics, REWARD_AND_LOSS + SYNC + length_bin_keys("fspo") + ["pods/reward_mean_after"])
    for step in (1, 2):
        values = result.metrics[step]
        assert values["pods/kept"] == prompts * keep and values["pods/dropped"] == prompts * (n - keep)
        # max-variance selection never lowers the mean within-group reward variance
        assert values["pods/group_reward_var_after"] >= values["pods/group_reward_var_before"] - 1e-9
        # the actor trained on the kept samples only: the fspo bins count them (per micro-batch mean > 0)
        assert values["actor/fspo/seqs_len_0_256"] > 0


def test_a_frozen_server_is_caught(tmp_path, cache_dir):
    """Negative control for the on-policy check: a server that ignores weight syncs generates from the initial
    weights, so after the first update its token probabilities differ from the actor's."""
    from fspo_verl.rollout_hf.server import FREEZE_ENV

    extra = [*FSPO, "trainer.val_before_train=false"]
    result = run_cpu_demo(tmp_path, cache_dir, steps=2, extra=extra, env_extra={FREEZE_ENV: "1"})
    assert_succeeded(result)
    # the premise: step 1 has rewards to learn from, so its update moves the actor. With the countdown model
    # on this task (mean reward ~0.005), a step often had none and the control failed by chance
    assert 0.1 < result.metrics[1]["critic/score/mean"] < 0.9, result.metrics[1]["critic/score/mean"]
    assert result.metrics[1]["training/rollout_probs_diff_max"] < 1e-4  # same initial weights on both sides
    assert result.metrics[2]["training/rollout_probs_diff_max"] > 1e-3  # stale by one step
