"""PODS/GFPO settings and the batch geometry after keeping m of n, checked in the driver.

``check_downsampling_config(config) -> list[str]`` returns one full message per problem (key, bad value,
corrected value); ``validate_downsampling_config(config)`` raises ``DownsamplingConfigError`` with all of them.
Both run before any Ray worker starts; the settings themselves live in :mod:`fspo_verl.downsampling.settings`.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.common.critic import critic_used
from fspo_verl.downsampling.rules import MIN_KEEP
from fspo_verl.downsampling.settings import (
    ASYNC_CLASS,
    KWARGS_KEY,
    MODULE_PATHS,
    SYNC_CLASS,
    DownsamplingConfigError,
    DownsamplingSettings,
    _plain,
    _prompts_per_sample,
    corrected_mini_batch_size,
    pods_enabled,
)
from fspo_verl.preflight.registry import Findings, register_check


@register_check
def check_downsampling(config: DictConfig) -> Findings:
    """PODS/GFPO settings and the batch geometry after keeping m of n (:func:`check_downsampling_config`)."""
    return Findings(errors=check_downsampling_config(config))


def check_downsampling_config(config: DictConfig) -> list[str]:
    """Problems with the PODS settings of a composed verl config; empty when PODS is off or correct.

    Args:
        config: the full trainer config (verl's ``ppo_trainer.yaml`` composed with the user's overrides).

    Returns:
        One message per problem, each naming the config key, its bad value and the value to set.
    """
    sampler_kwargs = _plain(config_value(config, KWARGS_KEY)) or {}
    if not pods_enabled(config):
        custom = config_value(config, "trainer.v1.sampler.custom_sampler.path")
        if not custom and {"keep", "rule"} & set(sampler_kwargs):
            return [
                f"{KWARGS_KEY} sets {sorted({'keep', 'rule'} & set(sampler_kwargs))} but "
                "trainer.v1.sampler.custom_sampler.path=null, so verl's built-in buffer ignores them and no "
                f"down-sampling happens; set trainer.v1.sampler.custom_sampler.path={MODULE_PATHS[0]} and "
                f"trainer.v1.sampler.custom_sampler.name={SYNC_CLASS}"
            ]
        return []

    problems: list[str] = []
    mode = config_value(config, "trainer.v1.trainer_mode", "sync")
    name = config_value(config, "trainer.v1.sampler.custom_sampler.name")
    right_name = SYNC_CLASS if mode == "sync" else ASYNC_CLASS
    if name != right_name:
        problems.append(
            f"trainer.v1.sampler.custom_sampler.name={name} does not match trainer.v1.trainer_mode={mode}; "
            f"set trainer.v1.sampler.custom_sampler.name={right_name}"
        )
    try:
        settings = DownsamplingSettings.parse(sampler_kwargs)
    except DownsamplingConfigError as err:
        return [*problems, str(err)]

    n = int(config_value(config, "actor_rollout_ref.rollout.n"))
    keep = settings.keep
    if keep >= n:
        problems.append(
            f"{KWARGS_KEY}.keep={keep} must be smaller than actor_rollout_ref.rollout.n={n}; set "
            f"{KWARGS_KEY}.keep={max(MIN_KEEP.get(settings.rule, 1), n // 4)} (the PODS paper's n/m = 4) or raise "
            f"actor_rollout_ref.rollout.n above {keep}"
        )
    min_keep = MIN_KEEP.get(settings.rule, 1)
    if keep < min_keep:
        problems.append(
            f"{KWARGS_KEY}.keep={keep} is below the minimum {min_keep} of rule {settings.rule} "
            f"(a single response has no variance); set {KWARGS_KEY}.keep={min_keep}"
        )

    reward_model = "reward.reward_model"
    if config_value(config, f"{reward_model}.enable", False) and not config_value(config, f"{reward_model}.enable_resource_pool", False):
        problems.append(
            f"{reward_model}.enable_resource_pool=False with {reward_model}.enable=True computes rewards after "
            "sampling, so PODS would have no rm_scores to select on; set "
            f"{reward_model}.enable_resource_pool=True"
        )

    problems += _dapo_problems(config, settings, mode)
    if keep < n:
        problems += _geometry_problems(config, n, keep)
    return problems


def _dapo_problems(config: DictConfig, settings: DownsamplingSettings, mode: str) -> list[str]:
    problems = []
    dapo_on = bool(config_value(config, "algorithm.filter_groups.enable", False))
    dapo_metric = config_value(config, "algorithm.filter_groups.metric", "reward")
    if dapo_on and settings.filter_groups_metric != dapo_metric:
        problems.append(
            f"algorithm.filter_groups.enable=True but {KWARGS_KEY}.filter_groups_metric="
            f"{settings.filter_groups_metric}: verl does not pass DAPO settings to a custom sampler, so no "
            f"group would be filtered; set +{KWARGS_KEY}.filter_groups_metric={dapo_metric}"
        )
    if settings.filter_groups_metric is not None and not dapo_on:
        problems.append(
            f"{KWARGS_KEY}.filter_groups_metric={settings.filter_groups_metric} with "
            "algorithm.filter_groups.enable=False: verl then fetches refill prompts in whole train batches and "
            "the refill fails; set algorithm.filter_groups.enable=True"
        )
    tbs = int(config_value(config, "data.train_batch_size"))
    if settings.filter_groups_metric is not None and mode == "sync" and settings.train_batch_size != tbs:
        problems.append(
            f"{KWARGS_KEY}.train_batch_size={settings.train_batch_size} must equal data.train_batch_size={tbs} "
            f"for sync DAPO refill; set +{KWARGS_KEY}.train_batch_size={tbs}"
        )
    return problems


def _geometry_problems(config: DictConfig, n: int, keep: int) -> list[str]:
    """After down-sampling a step holds prompts*keep samples; each mini-batch must divide it exactly."""
    tbs = int(config_value(config, "data.train_batch_size"))
    prompts, sync_step = _prompts_per_sample(config)
    samples = prompts * keep
    problems = []
    roles = [("actor_rollout_ref.actor", True), ("critic", critic_used(config))]
    for role, active in roles:
        if not active:
            continue
        key = f"{role}.ppo_mini_batch_size"
        mini = int(config_value(config, key))
        if samples % (mini * n) == 0:
            continue
        fixed = corrected_mini_batch_size(prompts, n, keep, mini)
        head = (
            f"{key}={mini} counts prompts and verl multiplies it by actor_rollout_ref.rollout.n={n}, so a "
            f"mini-batch is {mini * n} samples, but after down-sampling a step holds data.train_batch_size"
            f"{'/parameter_sync_step' if sync_step > 1 else ''}={prompts} x keep={keep} = {samples} samples; "
            "verl would pad with dummy rows and dilute seq-mean losses. "
        )
        if fixed is not None:
            problems.append(head + f"To fix it, set {key}={fixed} (prompts_per_update * keep / n).")
        else:
            step = n // math.gcd(n, keep) * sync_step
            problems.append(
                head + f"No {key} fits: set data.train_batch_size to a multiple of {step} "
                f"(e.g. {max(step, tbs // step * step)}) or choose keep so that n divides train_batch_size*keep."
            )
    return problems


def validate_downsampling_config(config: DictConfig) -> None:
    """Raise ``DownsamplingConfigError`` listing every problem ``check_downsampling_config`` finds."""
    problems = check_downsampling_config(config)
    if problems:
        raise DownsamplingConfigError("PODS configuration problems:\n- " + "\n- ".join(problems))
