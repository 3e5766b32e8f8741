"""The driver-side PODS check on verl's real ``ppo_trainer.yaml``, composed with Hydra."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest
import verl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from verl.trainer.ppo.v1.trainer_base import PPOTrainer

from fspo_verl.downsampling.settings import (
    DownsamplingConfigError,
    corrected_mini_batch_size,
)
from fspo_verl.preflight.downsampling import (
    check_downsampling_config,
    validate_downsampling_config,
)

VERL_CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
PODS = [
    "trainer.v1.sampler.custom_sampler.path=pkg://fspo_verl.pods",
    "trainer.v1.sampler.custom_sampler.name=PODSReplayBuffer",
    "+trainer.v1.sampler.sampler_kwargs.rule=max_variance",
    "algorithm.adv_estimator=grpo",  # no critic unless a test asks for one
]


def _compose(*overrides: str, pods: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[*(PODS if pods else []), *overrides])


def _geometry(n: int, keep: int, tbs: int, mini: int, *extra: str) -> DictConfig:
    return _compose(
        f"actor_rollout_ref.rollout.n={n}",
        f"+trainer.v1.sampler.sampler_kwargs.keep={keep}",
        f"data.train_batch_size={tbs}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        *extra,
    )


def _verl_pads(config: DictConfig, samples: int, dp_size: int = 1) -> bool:
    """Would verl's own V1 trainer pad a batch of ``samples`` rows with dummy ones? (its real rule)"""
    trainer = SimpleNamespace(config=config, use_critic=config.algorithm.adv_estimator == "gae", global_steps=1)
    return samples % PPOTrainer._get_required_batch_multiple(trainer, dp_size) != 0


def test_default_config_without_pods_has_no_problems() -> None:
    assert check_downsampling_config(_compose(pods=False)) == []


def test_sampler_kwargs_without_the_custom_sampler_are_flagged() -> None:
    (problem,) = check_downsampling_config(_compose("+trainer.v1.sampler.sampler_kwargs.keep=4", pods=False))
    assert "custom_sampler.path=null" in problem and "custom_sampler.path=pkg://fspo_verl.pods" in problem


def test_consistent_pods_config_passes_and_verl_adds_no_padding() -> None:
    # 16 prompts x keep 4 = 64 samples; ppo_mini_batch_size 2 x n 16 = 32 samples: two exact updates
    config = _geometry(16, 4, 16, 2)
    assert check_downsampling_config(config) == []
    validate_downsampling_config(config)
    assert not _verl_pads(config, samples=16 * 4)


def test_unrescaled_mini_batch_is_rejected_with_the_corrected_value() -> None:
    """The measured case: 8 prompts x keep 2 = 16 real rows; mini-batch 8 x n 4 = 32, so verl pads 16."""
    config = _geometry(4, 2, 8, 8)
    assert _verl_pads(config, samples=16)
    (problem,) = check_downsampling_config(config)
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=8" in problem
    assert "16 samples" in problem and "32 samples" in problem
    assert problem.endswith("set actor_rollout_ref.actor.ppo_mini_batch_size=4 (prompts_per_update * keep / n).")
    fixed = _geometry(4, 2, 8, 4)
    assert check_downsampling_config(fixed) == [] and not _verl_pads(fixed, samples=16)


@pytest.mark.parametrize(("n", "keep", "tbs", "mini"), [(8, 2, 8, 3), (16, 4, 32, 16), (64, 16, 16, 16), (6, 4, 12, 12)])
def test_every_suggested_mini_batch_size_removes_verl_padding(n: int, keep: int, tbs: int, mini: int) -> None:
    problems = check_downsampling_config(_geometry(n, keep, tbs, mini))
    assert len(problems) == 1
    value = int(re.search(r"set actor_rollout_ref\.actor\.ppo_mini_batch_size=(\d+)", problems[0]).group(1))
    fixed = _geometry(n, keep, tbs, value)
    assert check_downsampling_config(fixed) == []
    assert not _verl_pads(fixed, samples=tbs * keep)


def test_geometry_no_mini_batch_can_fix_asks_for_another_train_batch_size() -> None:
    # 4 prompts x keep 2 = 8 samples; any mini-batch is a multiple of n=3 samples, none divides 8
    (problem,) = check_downsampling_config(_geometry(3, 2, 4, 1))
    assert "No actor_rollout_ref.actor.ppo_mini_batch_size fits" in problem
    assert "data.train_batch_size to a multiple of 3" in problem
    assert check_downsampling_config(_geometry(3, 2, 6, 1)) == []


def test_critic_mini_batch_is_checked_too() -> None:
    problems = check_downsampling_config(_geometry(8, 2, 8, 2, "algorithm.adv_estimator=gae", "critic.ppo_mini_batch_size=8"))
    assert len(problems) == 1 and problems[0].startswith("critic.ppo_mini_batch_size=8")
    assert "set critic.ppo_mini_batch_size=2" in problems[0]


def test_separate_async_counts_prompts_per_parameter_sync_step() -> None:
    # 32 prompts / parameter_sync_step 4 = 8 prompts per sample() -> 8 x 2 = 16 samples per update
    base = ("trainer.v1.trainer_mode=separate_async", "trainer.v1.sampler.custom_sampler.name=PODSReplayBufferAsync")
    assert check_downsampling_config(_geometry(8, 2, 32, 2, *base)) == []
    (problem,) = check_downsampling_config(_geometry(8, 2, 32, 8, *base))
    assert "/parameter_sync_step=8 x keep=2 = 16 samples" in problem and "ppo_mini_batch_size=2" in problem


def test_keep_must_be_below_n() -> None:
    (problem,) = check_downsampling_config(_geometry(8, 8, 8, 8))
    assert "trainer.v1.sampler.sampler_kwargs.keep=8 must be smaller than actor_rollout_ref.rollout.n=8" in problem
    assert "set trainer.v1.sampler.sampler_kwargs.keep=2" in problem


def test_max_variance_needs_keep_of_at_least_two() -> None:
    (problem,) = check_downsampling_config(_geometry(8, 1, 8, 1))
    assert "keep=1 is below the minimum 2 of rule max_variance" in problem
    assert "set trainer.v1.sampler.sampler_kwargs.keep=2" in problem
    # other rules accept keep=1 (8 prompts x 1 = 8 samples = mini-batch 1 x n 8)
    assert check_downsampling_config(_geometry(8, 1, 8, 1, "+trainer.v1.sampler.sampler_kwargs.seed=0", "trainer.v1.sampler.sampler_kwargs.rule=shortest")) == []


def test_class_must_match_trainer_mode() -> None:
    (problem,) = check_downsampling_config(_geometry(8, 2, 8, 2, "trainer.v1.trainer_mode=colocate_async"))
    assert problem == (
        "trainer.v1.sampler.custom_sampler.name=PODSReplayBuffer does not match trainer.v1.trainer_mode=colocate_async; "
        "set trainer.v1.sampler.custom_sampler.name=PODSReplayBufferAsync"
    )


def test_colocated_reward_model_is_rejected() -> None:
    (problem,) = check_downsampling_config(_geometry(8, 2, 8, 2, "reward.reward_model.enable=True"))
    assert "set reward.reward_model.enable_resource_pool=True" in problem
    assert check_downsampling_config(
        _geometry(8, 2, 8, 2, "reward.reward_model.enable=True", "reward.reward_model.enable_resource_pool=True")
    ) == []


def test_dapo_must_be_passed_through_sampler_kwargs() -> None:
    dapo = ("algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc")
    problems = check_downsampling_config(_geometry(8, 2, 8, 2, *dapo))
    assert problems == [
        "algorithm.filter_groups.enable=True but trainer.v1.sampler.sampler_kwargs.filter_groups_metric=None: verl "
        "does not pass DAPO settings to a custom sampler, so no group would be filtered; set "
        "+trainer.v1.sampler.sampler_kwargs.filter_groups_metric=acc"
    ]
    paired = (*dapo, "+trainer.v1.sampler.sampler_kwargs.filter_groups_metric=acc")
    (problem,) = check_downsampling_config(_geometry(8, 2, 8, 2, *paired))
    assert "set +trainer.v1.sampler.sampler_kwargs.train_batch_size=8" in problem
    ok = (*paired, "+trainer.v1.sampler.sampler_kwargs.train_batch_size=${data.train_batch_size}")
    assert check_downsampling_config(_geometry(8, 2, 8, 2, *ok)) == []
    (problem,) = check_downsampling_config(
        _geometry(8, 2, 8, 2, "+trainer.v1.sampler.sampler_kwargs.filter_groups_metric=acc",
                  "+trainer.v1.sampler.sampler_kwargs.train_batch_size=8")
    )
    assert "set algorithm.filter_groups.enable=True" in problem


def test_bad_sampler_kwargs_are_reported_not_raised() -> None:
    problems = check_downsampling_config(_compose("+trainer.v1.sampler.sampler_kwargs.keep=2", "trainer.v1.sampler.sampler_kwargs.rule=maxvar"))
    assert len(problems) == 1 and "rule='maxvar' is not a registered down-sampling rule" in problems[0]
    (problem,) = check_downsampling_config(_compose())
    assert "sampler_kwargs.keep is not set" in problem


def test_validate_raises_with_every_problem() -> None:
    config = _geometry(4, 4, 8, 8, "trainer.v1.trainer_mode=colocate_async")
    with pytest.raises(DownsamplingConfigError) as info:
        validate_downsampling_config(config)
    message = str(info.value)
    assert "custom_sampler.name=PODSReplayBufferAsync" in message and "must be smaller than" in message


def test_corrected_mini_batch_size_prefers_the_rescaled_value() -> None:
    assert corrected_mini_batch_size(prompts_per_step=64, n=16, keep=4, current=32) == 8  # 32 * 4 / 16
    assert corrected_mini_batch_size(prompts_per_step=8, n=8, keep=2, current=3) in (1, 2)
    assert corrected_mini_batch_size(prompts_per_step=4, n=3, keep=2, current=4) is None


def test_recipe_config_group_selects_pods_by_config_alone() -> None:
    group = ("hydra.searchpath=[pkg://fspo_verl.configs]", "+downsampling=pods")
    config = _compose(*group, "actor_rollout_ref.rollout.n=8", "data.train_batch_size=8",
                      "actor_rollout_ref.actor.ppo_mini_batch_size=2", "trainer.v1.sampler.sampler_kwargs.keep=2", pods=False)
    assert config.trainer.v1.sampler.custom_sampler.path == "pkg://fspo_verl.pods"
    assert check_downsampling_config(config) == []
    (problem,) = check_downsampling_config(_compose(*group, pods=False))
    assert "sampler_kwargs.keep is not set" in problem


@pytest.mark.parametrize(("mode", "cls_name"), [("sync", "PODSReplayBuffer"), ("separate_async", "PODSReplayBufferAsync")])
def test_verl_builds_our_buffer_from_the_config(mode: str, cls_name: str) -> None:
    """verl's own PPOTrainer._build_replay_buffer loads and constructs the class named in the config."""
    config = _geometry(8, 2, 8, 2, f"trainer.v1.trainer_mode={mode}", f"trainer.v1.sampler.custom_sampler.name={cls_name}")
    trainer = SimpleNamespace(config=config, trainer_mode=mode, _add_prompts_to_generate=lambda n: n)
    buffer = PPOTrainer._build_replay_buffer(trainer)
    assert type(buffer).__name__ == cls_name and type(buffer).__module__ == "fspo_verl.downsampling.replay_buffer"
    assert buffer.settings.keep == 2 and buffer.settings.rule == "max_variance"
    assert buffer.filter_groups_metric is None  # DAPO stays off unless sampler_kwargs asks for it
