"""PODS / GFPO settings, apart from the replay buffers of ``fspo_verl.downsampling.replay_buffer``.

This module imports neither TransferQueue nor verl's trainer, so the driver check
(:mod:`fspo_verl.preflight.downsampling`) can read it without loading the buffers.

The data presets give ``actor_rollout_ref.actor.ppo_mini_batch_size`` as ``${fspo_mini_batch:P}`` (P prompts per
update): :func:`derived_mini_batch_size` turns P into the value that fits the down-sampled step, so every
algorithm preset composes with every data preset without a hand-set mini-batch. :func:`register` makes the
resolver known in every verl process (``fspo_verl._registration``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fspo_verl.common.config_lookup import config_value
from fspo_verl.downsampling.rules import DOWNSAMPLERS

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
