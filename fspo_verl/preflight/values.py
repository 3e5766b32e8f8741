"""Numbers that type-check but make no sense: counts and lengths <= 0, a learning rate <= 0, a negative
temperature, and a group-relative advantage estimator with one response per prompt.

verl accepts ``trainer.total_training_steps=0`` or ``-1``, ``data.max_response_length=0`` and
``rollout.temperature=-1`` and starts a run that cannot train; ``rollout.n=0`` and ``actor.ppo_epochs=0``
fail deep in a worker. These are explicit rules, one table each.

Group-relative estimators. An estimator that normalises within the responses of one prompt gets the
prompt's ``index`` (uid) from verl's ``compute_advantage``; with ``rollout.n=1`` each group holds one
response, so GRPO's ``A_i = (r_i - mean_g r) / (std_g r + eps)`` and OPO's
``A_i = r_i - sum_g(l_j r_j) / sum_g(l_j)`` (arXiv 2505.23585) are 0 for every response, and nothing is
learnt. Which estimators are group-relative is read from the registry, not listed: those whose function
takes an ``index`` argument (grpo, grpo_vectorized, grpo_passk, rloo, rloo_vectorized, opo, opo_vectorized,
gdpo, gpg, reinforce_plus_plus_baseline, optimal_token_baseline, ... and any a plugin registers).
"""

from __future__ import annotations

import inspect
import math
from numbers import Real

from omegaconf import DictConfig

from fspo_verl.checks import Findings, register_check
from fspo_verl.config_lookup import config_value
from fspo_verl.preflight.messages import problem

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"

#: (key, null allowed, what it counts): integers that must be >= 1
POSITIVE_INTS: tuple[tuple[str, bool, str], ...] = (
    ("trainer.total_training_steps", True, "training steps (null: total_epochs x batches per epoch)"),
    ("trainer.total_epochs", False, "passes over the training data"),
    ("trainer.nnodes", False, "nodes"),
    ("trainer.n_gpus_per_node", False, "workers per node"),
    ("data.train_batch_size", False, "prompts per step"),
    ("data.max_prompt_length", False, "prompt tokens"),
    ("data.max_response_length", False, "response tokens"),
    (f"{ROLLOUT}.prompt_length", False, "prompt tokens of the rollout"),
    (f"{ROLLOUT}.response_length", False, "response tokens of the rollout"),
    (f"{ROLLOUT}.n", False, "responses per prompt"),
    (f"{ACTOR}.ppo_mini_batch_size", False, "prompts per update"),
    (f"{ACTOR}.ppo_epochs", False, "passes over each batch"),
    (f"{ACTOR}.ppo_micro_batch_size_per_gpu", True, "samples per forward pass"),
)

#: (key, what it is): numbers that must be > 0
POSITIVE_REALS: tuple[tuple[str, str], ...] = (
    (f"{ACTOR}.optim.lr", "the actor's learning rate"),
)

#: (key, what it is): numbers that must be >= 0
NON_NEGATIVE_REALS: tuple[tuple[str, str], ...] = (
    (f"{ROLLOUT}.temperature", "the sampling temperature"),
    (f"{ROLLOUT}.val_kwargs.temperature", "the validation sampling temperature"),
)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _value(config: DictConfig, key: str, found: Findings):
    try:
        return config_value(config, key)
    except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve
        found.errors.append(problem(key, "...", f"does not resolve ({err})", "give a number"))
        return None


def number_problems(config: DictConfig) -> Findings:
    found = Findings()
    for key, nullable, what in POSITIVE_INTS:
        value = _value(config, key, found)
        if value is None and nullable:
            continue
        if not _is_int(value) or value < 1:
            kind = "not an integer" if not _is_int(value) else "not positive"
            found.errors.append(problem(key, value, f"{kind}: it counts {what}", f"set {key} to an integer >= 1" + (" or null" if nullable else "")))
    for key, what in POSITIVE_REALS:
        value = _value(config, key, found)
        if not _is_real(value) or value <= 0:
            found.errors.append(problem(key, value, f"{what} must be a number > 0", f"set {key} to e.g. 1e-6"))
    for key, what in NON_NEGATIVE_REALS:
        value = _value(config, key, found)
        if value is not None and (not _is_real(value) or value < 0):
            found.errors.append(problem(key, value, f"{what} must be a number >= 0 (0 is greedy)", f"set {key}=1.0 (or 0 for greedy)"))
    return found


def group_relative(estimator: str) -> bool:
    """Whether the registered estimator normalises within a prompt's group (its function takes ``index``)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    fn = ADV_ESTIMATOR_REGISTRY.get(estimator)
    if fn is None:
        return False
    try:
        return "index" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def group_problems(config: DictConfig) -> Findings:
    found = Findings()
    estimator = config_value(config, "algorithm.adv_estimator")
    n = config_value(config, f"{ROLLOUT}.n")
    if isinstance(estimator, str) and _is_int(n) and n == 1 and group_relative(estimator):
        found.errors.append(problem(
            f"{ROLLOUT}.n", n,
            f"algorithm.adv_estimator={estimator} compares the responses of one prompt, and with one response per "
            "prompt every advantage is 0, so nothing is learnt",
            f"set {ROLLOUT}.n to 2 or more (our presets use 8), or algorithm.adv_estimator=reinforce_plus_plus / gae",
        ))
    return found


@register_check
def check_values(config: DictConfig) -> Findings:
    found = number_problems(config)
    found.extend(group_problems(config))
    return found
