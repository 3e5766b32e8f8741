"""PODS / GFPO settings and their driver-side check, apart from the replay buffers of ``fspo_verl.downsampling.replay_buffer``.

This module imports neither TransferQueue nor verl's trainer, so ``fspo_verl.preflight.registry`` can run it in the
driver without loading the buffers (and without an import cycle). ``check_downsampling_config(config) ->
list[str]`` returns one full message per problem (key, bad value, corrected value);
``validate_downsampling_config(config)`` raises ``DownsamplingConfigError`` with all of them. Call either
before any Ray worker starts.

The data presets give ``actor_rollout_ref.actor.ppo_mini_batch_size`` as ``${fspo_mini_batch:P}`` (P prompts per
update): :func:`derived_mini_batch_size` turns P into the value that fits the down-sampled step, so every
algorithm preset composes with every data preset without a hand-set mini-batch. :func:`register` makes the
resolver known in every verl process (``fspo_verl._registration``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fspo_verl.common.config_lookup import config_value
from fspo_verl.downsampling.rules import DOWNSAMPLERS, MIN_KEEP

KWARGS_KEY = "trainer.v1.sampler.sampler_kwargs"
#: ``${fspo_mini_batch:P}``: the ppo_mini_batch_size of P prompts per update, after down-sampling
MINI_BATCH_RESOLVER = "fspo_mini_batch"
MODULE_PATHS = ("pkg://fspo_verl.pods", "pkg://fspo_verl/pods")
SYNC_CLASS, ASYNC_CLASS = "PODSReplayBuffer", "PODSReplayBufferAsync"


class DownsamplingConfigError(ValueError):
    """Raised in the driver when the PODS settings would fail or silently mis-train."""


@dataclasses.dataclass(frozen=True)
class DownsamplingSettings:
    """``trainer.v1.sampler.sampler_kwargs`` for PODS.

    Attributes:
        keep: m, responses kept per prompt.
        rule: a name registered with ``register_downsampler``.
        seed: seed of the ``random`` rule; step t uses ``seed * 1_000_003 + t`` so that a resumed run
            repeats the same choices.
        filter_groups_metric: DAPO metric ("reward" or a ``reward_extra_info`` key); None disables it.
        train_batch_size: prompts per step, required by sync-mode DAPO refill.
        max_inflight_gen_batches: sync-mode DAPO bound on speculative generation (verl's default 1).
    """

    keep: int
    rule: str = "max_variance"
    seed: int = 0
    filter_groups_metric: str | None = None
    train_batch_size: int | None = None
    max_inflight_gen_batches: int = 1

    @classmethod
    def parse(cls, sampler_kwargs: Mapping | None) -> DownsamplingSettings:
        """Build from sampler_kwargs; raises ``DownsamplingConfigError`` naming the bad key."""
        raw = _plain(sampler_kwargs) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise DownsamplingConfigError(
                f"{KWARGS_KEY} has unknown key(s) {unknown}; PODS accepts {sorted(names)}. Remove or rename them."
            )
        if raw.get("keep", None) in (None, "???"):  # absent, or the preset's null/mandatory placeholder
            raise DownsamplingConfigError(
                f"{KWARGS_KEY}.keep is not set; set +{KWARGS_KEY}.keep=<m>, the responses kept per prompt "
                "(e.g. rollout.n/4 as in the PODS paper)"
            )
        keep = raw["keep"]
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise DownsamplingConfigError(
                f"{KWARGS_KEY}.keep={keep!r} must be a positive integer; set {KWARGS_KEY}.keep=<m>, the responses "
                "kept per prompt (e.g. rollout.n/4 as in the PODS paper)"
            )
        rule = raw.get("rule", cls.rule)
        if rule not in DOWNSAMPLERS:
            raise DownsamplingConfigError(
                f"{KWARGS_KEY}.rule={rule!r} is not a registered down-sampling rule; "
                f"set {KWARGS_KEY}.rule to one of {sorted(DOWNSAMPLERS)}"
            )
        return cls(**raw)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def pods_enabled(config: DictConfig) -> bool:
    """True when ``trainer.v1.sampler.custom_sampler.path`` points at this module."""
    path = config_value(config, "trainer.v1.sampler.custom_sampler.path")
    return bool(path) and (path in MODULE_PATHS or str(path).replace("\\", "/").endswith("fspo_verl/downsampling/replay_buffer.py"))


def corrected_mini_batch_size(prompts_per_step: int, n: int, keep: int, current: int) -> int | None:
    """A ``ppo_mini_batch_size`` (prompts, scaled by n inside verl) whose n-multiple divides prompts*keep.

    Prefers ``current * keep / n`` (same number of updates per step as without PODS); otherwise the valid
    value closest to it (ties to the larger). None if no value works (then train_batch_size must change).
    """
    samples = prompts_per_step * keep
    valid = [v for v in range(1, samples // n + 1) if samples % (v * n) == 0]
    if not valid:
        return None
    target = current * keep / n
    return min(valid, key=lambda v: (abs(v - target), -v))


def _prompts_per_sample(config: DictConfig) -> tuple[int, int]:
    """(prompts per sample() call, parameter_sync_step): train_batch_size / parameter_sync_step in the async modes."""
    mode = config_value(config, "trainer.v1.trainer_mode", "sync")
    sync_step = int(config_value(config, f"trainer.v1.{mode}.parameter_sync_step", 1) or 1)
    return int(config_value(config, "data.train_batch_size")) // sync_step, sync_step


def derived_mini_batch_size(prompts_per_update: int, *, _root_: DictConfig) -> int:
    """``${fspo_mini_batch:P}``: ``ppo_mini_batch_size`` for P prompts per optimizer update.

    verl multiplies ppo_mini_batch_size by n, but after keeping m of n responses a prompt holds m samples, so
    P prompts per update need P*m/n (``corrected_mini_batch_size``: that, or the value nearest it whose n-multiple
    divides the step's prompts*m samples). Without down-sampling, or with settings the driver check rejects
    (keep unset or >= n; no value fits), it is P itself, and the check names the problem.
    """
    if not pods_enabled(_root_):
        return prompts_per_update
    keep = config_value(_root_, f"{KWARGS_KEY}.keep")
    n = config_value(_root_, "actor_rollout_ref.rollout.n")
    if isinstance(keep, bool) or not isinstance(keep, int) or not isinstance(n, int) or not 1 <= keep < n:
        return prompts_per_update
    prompts, _ = _prompts_per_sample(_root_)
    fixed = corrected_mini_batch_size(prompts, n, keep, prompts_per_update)
    return prompts_per_update if fixed is None else fixed


def register() -> None:
    """Register ``${fspo_mini_batch:P}`` with OmegaConf (idempotent)."""
    if not OmegaConf.has_resolver(MINI_BATCH_RESOLVER):
        OmegaConf.register_new_resolver(MINI_BATCH_RESOLVER, derived_mini_batch_size)


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
    roles = [("actor_rollout_ref.actor", True)]
    try:
        from verl.trainer.ppo.utils import need_critic

        roles.append(("critic", need_critic(config)))
    except Exception:  # noqa: BLE001 - a config without critic keys simply has no critic
        pass
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
