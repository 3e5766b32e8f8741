"""Every preset composes against verl 0.9.1's real ppo_trainer.yaml and passes verl's validate_config and
our checks; each composition that cannot work is rejected in the driver with its message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fspo_verl.cli.validate import GROUPS, ComposeError, compose, presets
from fspo_verl.preflight.registry import run_checks

ACTOR = "actor_rollout_ref.actor"
GPU_CONTEXT = ["cluster=8gpu", "model=qwen3_8b_base", "data=math"]


@pytest.fixture(autouse=True)
def _files_live_on_the_cluster(monkeypatch):
    """The GPU presets name data under ~/data and Hub models that this test machine does not have: validate as a submission script does (absent paths warn; fspo_verl.preflight.locality)."""
    monkeypatch.setenv("FSPO_VERL_FILES_ELSEWHERE", "1")



def _errors(overrides: list[str]) -> list[str]:
    return run_checks(compose(overrides)).errors


def test_groups_ship_the_presets_the_docs_promise():
    assert set(presets("algorithm")) >= {"fspo", "fspo_adaptive", "sspo", "opo", "pods", "pods_128_32", "gfpo", "gspo", "gmpo", "sapo", "cispo", "grpo"}
    assert set(presets("model")) >= {"tiny_cpu", "qwen2_5_0_5b_instruct", "qwen2_5_3b_instruct", "qwen3_1_7b_base", "qwen3_8b_base", "deepseek_r1_distill_qwen_7b"}
    assert set(presets("data")) >= {"countdown_cpu", "synthetic_cpu", "checksum_cpu", "gsm8k", "math"}
    assert set(presets("cluster")) >= {"cpu", "1gpu", "8gpu", "multinode"}
    assert set(presets("downsampling")) >= {"none", "pods", "gfpo"}


@pytest.mark.parametrize("cluster", [c for c in presets("cluster") if c != "cpu"])  # cpu: test_preset_pairs.py
@pytest.mark.parametrize("algorithm", presets("algorithm"))
def test_every_algorithm_on_every_cluster_validates(algorithm, cluster):
    assert _errors([f"algorithm={algorithm}", f"cluster={cluster}", "model=qwen3_8b_base", "data=math"]) == []


@pytest.mark.parametrize("group", [g for g in GROUPS if g not in ("algorithm", "cluster")])
def test_every_other_preset_validates(group):
    for option in presets(group):
        base = [] if option in ("tiny_cpu", "synthetic_cpu", "countdown_cpu", "checksum_cpu") else GPU_CONTEXT
        overrides = [o for o in base if not o.startswith(f"{group}=")] + [f"{group}={option}"]
        if group == "downsampling" and option != "none":
            overrides += ["actor_rollout_ref.rollout.n=8", "trainer.v1.sampler.sampler_kwargs.keep=2", f"{ACTOR}.ppo_mini_batch_size=8"]
        assert _errors(overrides) == [], overrides


def test_presets_carry_their_paper_settings():
    cfg = compose(["algorithm=gspo"])
    assert (cfg.actor_rollout_ref.actor.clip_ratio_low, cfg.actor_rollout_ref.actor.clip_ratio_high) == (3e-4, 4e-4)
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-mean"
    assert compose(["algorithm=gmpo"]).actor_rollout_ref.actor.clip_ratio_low == 0.4
    sapo = compose(["algorithm=sapo"]).actor_rollout_ref.actor
    assert (sapo.tau_pos, sapo.tau_neg, sapo.policy_loss.loss_mode) == (1.0, 1.05, "sapo")
    assert compose(["algorithm=cispo"]).actor_rollout_ref.actor.clip_ratio_low >= 1.0  # no lower bound
    pods = compose(["algorithm=pods"])
    assert (pods.actor_rollout_ref.rollout.n, pods.trainer.v1.sampler.sampler_kwargs.keep) == (64, 16)
    pods8 = compose(["algorithm=pods_128_32"])
    assert (pods8.actor_rollout_ref.rollout.n, pods8.trainer.v1.sampler.sampler_kwargs.keep) == (128, 32)
    opo = compose(["algorithm=opo", "data.train_batch_size=24"])
    assert opo.algorithm.adv_estimator == "opo_vectorized"
    assert opo.actor_rollout_ref.actor.ppo_mini_batch_size == 24  # tied to the batch: exact on-policy
    fspo = compose(["algorithm=fspo", f"{ACTOR}.policy_loss.fspo_c_high=0.02"])  # no '+' needed in a preset
    assert fspo.actor_rollout_ref.actor.policy_loss.fspo_c_high == 0.02
    adaptive = compose(["algorithm=fspo_adaptive", f"{ACTOR}.policy_loss.fspo_target_clip_rate=0.05"]).actor_rollout_ref.actor
    assert (adaptive.policy_loss.loss_mode, adaptive.policy_loss.fspo_target_clip_rate) == ("fspo_adaptive", 0.05)
    assert adaptive.loss_agg_mode == "seq-mean-token-mean"


def test_the_demo_task_sets_fspo_length_scale_and_the_rollout_follows_data_lengths():
    from fspo_verl.demo.overrides import task_policy_loss

    task = task_policy_loss("countdown_cpu")
    default = compose([])  # `fspo-verl train` with no arguments: algorithm=fspo on data=countdown_cpu
    assert default.data.train_files.endswith("countdown/train.parquet")
    for algorithm in ("fspo", "fspo_adaptive", "sspo"):
        loss = compose([f"algorithm={algorithm}"]).actor_rollout_ref.actor.policy_loss
        assert (list(loss.length_bins), loss.fspo_c_low, loss.fspo_c_high) == (
            task["length_bins"], task["fspo_c_low"], task["fspo_c_high"]
        )
    elsewhere = compose(["algorithm=fspo", *GPU_CONTEXT]).actor_rollout_ref.actor.policy_loss
    assert (list(elsewhere.length_bins), elsewhere.fspo_c_low) == ([256, 512, 1024, 2048, 4096], 0.0096)
    rollout = default.actor_rollout_ref.rollout
    assert (rollout.prompt_length, rollout.response_length) == (default.data.max_prompt_length, default.data.max_response_length)
    rollout = compose(["data.max_prompt_length=16", "data.max_response_length=200"]).actor_rollout_ref.rollout
    assert (rollout.prompt_length, rollout.response_length) == (16, 200)


@pytest.mark.parametrize("algorithm", ["fspo", "fspo_adaptive", "sspo", "opo", "gspo", "gmpo", "sapo", "cispo", "grpo"])
def test_group_based_presets_sample_a_group_per_prompt(algorithm):
    """Group-relative advantages (GRPO's, OPO's baseline) are degenerate with one response per prompt.

    The group is 8 (our default) on a data preset without ``fspo_verl.task.group_size`` and the data preset's
    16 on the CPU demo's countdown; OPO keeps its paper's K=8 everywhere."""
    assert compose([f"algorithm={algorithm}", *GPU_CONTEXT]).actor_rollout_ref.rollout.n == 8
    assert compose([f"algorithm={algorithm}", "data=synthetic_cpu"]).actor_rollout_ref.rollout.n == 8
    demo = compose([f"algorithm={algorithm}"])  # data=countdown_cpu
    assert demo.fspo_verl.task.group_size == 16
    assert demo.actor_rollout_ref.rollout.n == (8 if algorithm == "opo" else 16)
    assert demo.data.train_batch_size == 16


@pytest.mark.parametrize("data", ["countdown_cpu", "synthetic_cpu", "checksum_cpu"])
def test_demo_overrides_for_verls_entry_point_never_name_fspo_verls_section(data):
    """``fspo_verl.demo.overrides`` turns the CPU presets into plain overrides of ``verl.trainer.main_ppo``,
    whose config has no ``fspo_verl`` section (the function drops it): an interpolation into it would fail in
    verl's TaskRunner (seen: ``rollout.n: ${fspo_verl.task.group_size}``, InterpolationKeyError)."""
    from fspo_verl.demo import ensure_assets
    from fspo_verl.demo.overrides import demo_overrides

    assets = {key: f"/{key}" for key in ensure_assets()}  # the keys only: nothing is built
    effective = {}  # key -> value of its last override (Hydra applies them in order)
    for override in demo_overrides(assets, "/run", steps=2, data=data):
        key, value = override.lstrip("+").split("=", 1)
        effective[key] = value
    assert "actor_rollout_ref.rollout.n" in effective
    assert not {k: v for k, v in effective.items() if "${fspo_verl." in v}, effective
    model = {"countdown_cpu": "/model_path", "synthetic_cpu": "/next_digit_model_path",
             "checksum_cpu": "/checksum_model_path"}[data]  # the task's warm model
    assert effective["actor_rollout_ref.model.path"] == effective["critic.model.path"] == model


def test_the_tiny_model_is_the_one_warm_started_on_the_data_presets_task():
    """model=tiny_cpu loads the demo model that ``fspo_verl.task.model_asset`` of the data preset names: the
    countdown model by default, next_digit's on data=synthetic_cpu, checksum's on data=checksum_cpu; a path the
    user gives wins."""
    from fspo_verl.demo import ensure_assets

    assets = ensure_assets()  # the default cache, which the composed paths resolve into
    for data, key in (("countdown_cpu", "model_path"), ("synthetic_cpu", "next_digit_model_path"),
                      ("checksum_cpu", "checksum_model_path")):
        config = compose([f"data={data}"])
        assert config.actor_rollout_ref.model.path == config.critic.model.path == assets[key], data
    mine = compose(["data=synthetic_cpu", "actor_rollout_ref.model.path=/my/model"])
    assert mine.actor_rollout_ref.model.path == "/my/model"


def test_an_unknown_demo_model_asset_is_caught_in_the_driver():
    errors = _errors(["data=synthetic_cpu", "fspo_verl.task.model_asset=bogus"])
    assert any(
        "actor_rollout_ref.model.path" in e and "${fspo_demo_asset:bogus}: unknown demo asset" in e
        and "next_digit_model_path" in e and "fspo_verl.task.model_asset" in e
        for e in errors
    ), errors


def test_opo_with_a_smaller_mini_batch_is_rejected():
    errors = _errors(["algorithm=opo", *GPU_CONTEXT, f"{ACTOR}.ppo_mini_batch_size=16"])
    assert any(
        f"{ACTOR}.ppo_mini_batch_size=16 breaks exact on-policy training" in e and f"set {ACTOR}.ppo_mini_batch_size=128" in e
        for e in errors
    ), errors


@pytest.mark.parametrize("key, value", [("ppo_epochs", "2"), ("use_kl_loss", "true"), ("entropy_coeff", "0.01")])
def test_opo_rejects_other_off_policy_settings(key, value):
    errors = _errors(["algorithm=opo", *GPU_CONTEXT, f"{ACTOR}.{key}={value}"])
    assert any(f"{ACTOR}.{key}=" in e and "exact on-policy" in e for e in errors), errors


def test_pods_with_a_padding_mini_batch_is_rejected_with_the_right_value():
    # 16 prompts x keep 16 = 256 samples; mini-batch 16 prompts x n 64 = 1024 rows would be padded
    errors = _errors(["algorithm=pods", "cluster=1gpu", "model=qwen2_5_3b_instruct", "data=gsm8k",
                      "data.train_batch_size=16", f"{ACTOR}.ppo_mini_batch_size=16"])
    assert any(f"set {ACTOR}.ppo_mini_batch_size=4" in e for e in errors), errors


def test_fspo_with_token_mean_warns_but_passes():
    found = run_checks(compose(["algorithm=fspo", *GPU_CONTEXT, f"{ACTOR}.loss_agg_mode=token-mean"]))
    assert found.errors == []
    assert any(f"{ACTOR}.loss_agg_mode=token-mean with loss_mode=fspo" in w for w in found.warnings)


def test_tensor_parallel_larger_than_a_node_is_rejected():
    errors = _errors(["algorithm=fspo", *GPU_CONTEXT, "actor_rollout_ref.rollout.tensor_model_parallel_size=16"])
    assert any("tensor_model_parallel_size=16 is larger than trainer.n_gpus_per_node=8" in e for e in errors), errors


def test_unknown_preset_is_a_compose_error():
    with pytest.raises(ComposeError, match="algorithm"):
        compose(["algorithm=ppo2"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fspo_verl.cli", *args], capture_output=True, text=True, timeout=300)


def test_validate_cli_prints_the_resolved_config_and_exits_zero():
    proc = _cli("validate", "algorithm=gspo", *GPU_CONTEXT)
    assert proc.returncode == 0, proc.stderr
    assert "loss_mode: gspo" in proc.stdout and "fspo-verl validate: OK" in proc.stderr


def test_validate_cli_lists_every_problem_and_exits_nonzero():
    proc = _cli("validate", "algorithm=opo", *GPU_CONTEXT, f"{ACTOR}.ppo_mini_batch_size=16", f"{ACTOR}.ppo_epochs=3",
                "actor_rollout_ref.rollout.tensor_model_parallel_size=16")
    assert proc.returncode == 1
    assert proc.stderr.count("ERROR:") >= 3 and "problem(s) found" in proc.stderr
    assert "ppo_epochs=3" in proc.stderr and "tensor_model_parallel_size=16" in proc.stderr


def test_validate_cli_rejects_bad_syntax():
    proc = _cli("validate", "algorithm=does_not_exist")
    assert proc.returncode == 1 and "cannot compose the config" in proc.stderr


def test_list_cli_shows_presets_and_registrations():
    proc = _cli("list")
    assert proc.returncode == 0
    assert "algorithm=" in proc.stdout and "fspo*" in proc.stdout and "opo_vectorized*" in proc.stdout


def test_micro_batch_that_does_not_divide_the_per_gpu_mini_batch_is_rejected():
    """Measured: verl's validate_config passes this CPU-demo PODS geometry, and then every worker fails with
    "data size must be divisible by force_group_size * micro_batch_size_per_gpu" (64 prompts x keep 2,
    mini-batch 4 x n 8 = 32 samples over 2 ranks = 16 per rank, micro-batch 32)."""
    pods = ["downsampling=pods", "trainer.v1.sampler.sampler_kwargs.keep=2", f"{ACTOR}.ppo_mini_batch_size=4",
            "actor_rollout_ref.rollout.n=8"]  # the demo's group is 16; 8 makes the per-rank mini-batch 16
    errors = _errors(pods)
    assert any(
        f"{ACTOR}.ppo_micro_batch_size_per_gpu=32 does not divide the per-GPU mini-batch" in e
        and "= 16 samples" in e and f"Set {ACTOR}.ppo_micro_batch_size_per_gpu=16." in e
        for e in errors
    ), errors
    assert _errors([*pods, f"{ACTOR}.ppo_micro_batch_size_per_gpu=16"]) == []


def test_micro_batch_check_applies_without_downsampling_too():
    errors = _errors(["algorithm=fspo", *GPU_CONTEXT, f"{ACTOR}.ppo_mini_batch_size=1", "actor_rollout_ref.rollout.n=4"])
    assert any("= 0.5 samples" in e and "Raise" in e for e in errors), errors
