"""cluster=1gpu_hf: one GPU without vLLM. It composes and validates on a machine without a GPU, runs the demo with
no further override (hf rollout, sdpa, no wandb, the batched agent loop) and takes its micro-batch sizes from the
model preset, not from a size meant for 8B models."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fspo_verl.cli.validate import compose
from fspo_verl.preflight.registry import run_checks

PRESET = Path(__file__).resolve().parents[1] / "fspo_verl" / "configs" / "cluster" / "1gpu_hf.yaml"
MICRO_BATCH_KEYS = (
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
)


def _get(config, key):
    return OmegaConf.select(config, key)


def test_the_demo_composes_for_one_gpu_with_the_hf_rollout_and_no_wandb():
    config = compose(["cluster=1gpu_hf"])
    assert run_checks(config).errors == []
    assert (_get(config, "trainer.device"), _get(config, "trainer.n_gpus_per_node"), _get(config, "trainer.nnodes")) == ("cuda", 1, 1)
    assert _get(config, "actor_rollout_ref.rollout.name") == "hf"
    assert list(_get(config, "trainer.logger")) == ["console", "file", "tensorboard"]
    assert _get(config, "actor_rollout_ref.model.override_config.attn_implementation") == "sdpa"
    assert _get(config, "actor_rollout_ref.rollout.agent.agent_loop_manager_class") == (
        "fspo_verl.cpu.agent_loop.BatchedAgentLoopManager"
    )
    assert _get(config, "fspo_verl.backend") is None  # not the CPU backend: verl's own cuda platform
    assert _get(config, "actor_rollout_ref.rollout.dtype") == "bfloat16"  # what the hf server loads in on a GPU


@pytest.mark.parametrize(
    ("model", "sizes"),
    [("tiny_cpu", (32, 32, 32)), ("qwen2_5_0_5b_instruct", (16, 32, 32)), ("qwen3_8b_base", (4, 8, 8))],
)
def test_micro_batch_sizes_come_from_the_model_preset(model, sizes, monkeypatch):
    monkeypatch.setenv("FSPO_VERL_FILES_ELSEWHERE", "1")  # Hub ids: validate as a submission script does
    config = compose(["cluster=1gpu_hf", f"model={model}"])
    assert tuple(_get(config, key) for key in MICRO_BATCH_KEYS) == sizes
    assert run_checks(config).errors == []
    # the vLLM one-GPU preset still imposes its own (sized for 7-8B models)
    assert tuple(_get(compose(["cluster=1gpu", f"model={model}"]), key) for key in MICRO_BATCH_KEYS) == (4, 8, 8)


def test_the_preset_file_sets_no_micro_batch_size():
    flat = OmegaConf.to_container(OmegaConf.load(PRESET))
    text = OmegaConf.to_yaml(flat)
    assert "micro_batch" not in text
