"""Every name a worker looks up by string, looked up in the driver in the same registry.

A typo in ``loss_mode`` used to fail only at the first ``update_actor``, after a whole generation; one in
``adv_estimator`` in the TaskRunner; one in ``trainer.logger`` as a bare ``AssertionError``. Each entry of
:data:`NAMED_KEYS` pairs a config key with the function that lists the names verl will accept there
(the registry itself, read at check time, so names other plugins register count too).

fspo_verl is imported in this process by the launcher, but verl's workers load it only through the
``verl.plugins`` entry point. When ``VERL_USE_EXTERNAL_PLUGINS`` excludes it, the workers will not know the
names it registers, even though this process does: a config that uses one is rejected here, naming the
variable. A component that failed to load (``fspo_verl._registration.LOAD_ERRORS``) is named in the message
of the unknown name it would have registered.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig

from fspo_verl import _registration
from fspo_verl.common.config_lookup import config_value
from fspo_verl.preflight.messages import closest, problem
from fspo_verl.preflight.registry import Findings, register_check

PLUGIN_ENV = "VERL_USE_EXTERNAL_PLUGINS"
ENTRY_POINT = "fspo_verl"
#: verl 0.9.1 ``PPOTrainer._load_checkpoint`` (trainer/ppo/v1/trainer_base.py) branches on these strings and
#: has no enum for them; any other value leaves the checkpoint folder unbound (UnboundLocalError)
RESUME_MODES = ("auto", "disable", "resume_path")


def _loggers() -> set[str]:
    from verl.utils.tracking import Tracking

    return set(Tracking.supported_backend)


def _reward_managers() -> set[str]:
    from verl.experimental.reward_loop.reward_manager import registry

    return set(registry.REWARD_MANAGER)


def _resume_modes() -> set[str]:
    return set(RESUME_MODES)


@dataclass(frozen=True)
class NamedKey:
    key: str
    #: what the name selects, for the message
    what: str
    names: Callable[[], set[str]]
    #: the kind in ``fspo_verl._registration.REGISTRIES`` whose names fspo_verl adds (None: none of ours)
    kind: str | None = None
    #: only when this other key has this value (e.g. the reward manager name only with source=register)
    only_if: tuple[str, str] | None = None


NAMED_KEYS: tuple[NamedKey, ...] = (
    NamedKey("actor_rollout_ref.actor.policy_loss.loss_mode", "policy loss", _registration._policy_losses, "policy_loss"),
    NamedKey("algorithm.adv_estimator", "advantage estimator", _registration._adv_estimators, "adv_estimator"),
    NamedKey("actor_rollout_ref.rollout.name", "rollout backend", _registration._rollout_replicas, "rollout_replica"),
    NamedKey("trainer.logger", "logger", _loggers),
    NamedKey("trainer.resume_mode", "resume mode", _resume_modes),
    NamedKey("reward.reward_manager.name", "reward manager", _reward_managers, only_if=("reward.reward_manager.source", "register")),
)


def plugin_disabled_reason() -> str | None:
    """Why verl's workers will not load fspo_verl (None when they will)."""
    policy = os.environ.get(PLUGIN_ENV, "auto").strip().lower()
    if policy == "none":
        return f"{PLUGIN_ENV}=none disables every verl plugin, fspo_verl included, in verl's workers"
    if policy != "auto" and ENTRY_POINT not in {p.strip() for p in policy.split(",")}:
        return f"{PLUGIN_ENV}={policy} does not list {ENTRY_POINT}, so verl's workers do not load it"
    from importlib.metadata import entry_points

    if ENTRY_POINT not in {ep.name for ep in entry_points(group="verl.plugins")}:
        return f"no '{ENTRY_POINT}' entry point in group verl.plugins: fspo-verl is not pip-installed in this Python"
    return None


def _plugin_fix() -> str:
    policy = os.environ.get(PLUGIN_ENV, "auto").strip().lower()
    if policy == "none":
        return f"unset {PLUGIN_ENV} (or export {PLUGIN_ENV}=auto)"
    return f"export {PLUGIN_ENV}={policy},{ENTRY_POINT}" if policy != "auto" else "pip install fspo-verl into the Python that runs verl"


def _ours(kind: str | None) -> set[str]:
    return {name for k, name in _registration.EXPECTED if k == kind}


def _load_note() -> str:
    if not _registration.LOAD_ERRORS:
        return ""
    failed = "; ".join(f"{module} failed to load ({text.strip().splitlines()[-1]})" for module, text in _registration.LOAD_ERRORS.items())
    return f"; note: {failed}, see `fspo-verl doctor`"


def _values(value) -> list:
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def name_problems(config: DictConfig, named: NamedKey) -> list[str]:
    if named.only_if and config_value(config, named.only_if[0]) != named.only_if[1]:
        return []
    value = config_value(config, named.key)
    if value is None:
        return []
    known = named.names()
    found = []
    disabled = plugin_disabled_reason()
    for name in _values(value):
        if not isinstance(name, str) or name not in known:
            listed = ", ".join(sorted(known))
            note = f"; fspo_verl's own names are missing because {disabled}" if disabled and named.kind else ""
            found.append(problem(
                named.key, value, f"{name!r} is not a registered {named.what}{closest(name, known)}{note}{_load_note() if named.kind else ''}",
                f"use one of: {listed}",
            ))
        elif disabled and name in _ours(named.kind):
            found.append(problem(
                named.key, value, f"{name!r} is registered by fspo_verl, and {disabled}: they would fail with an unknown {named.what}",
                _plugin_fix(),
            ))
    return found


@register_check
def check_names(config: DictConfig) -> Findings:
    found = Findings()
    for named in NAMED_KEYS:
        found.errors.extend(name_problems(config, named))
    return found
