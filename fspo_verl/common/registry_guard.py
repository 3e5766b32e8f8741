"""Registering into verl's registries without clobbering verl's own names or failing on re-import.

verl's ``register_policy_loss`` overwrites an existing name silently, and ``register_adv_est`` raises on a
second registration of a name with a different function object (which a module reload produces). These
wrappers replace only entries that fspo_verl itself made, and refuse to shadow anyone else's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verl.trainer.ppo import core_algos

_OURS = "fspo_verl"


def _is_ours(fn: Any) -> bool:
    return getattr(fn, "__module__", "").split(".")[0] == _OURS


def _claim(registry: dict[str, Any], name: str, kind: str) -> None:
    existing = registry.get(name)
    if existing is not None and not _is_ours(existing):
        raise RuntimeError(
            f"verl already registers a {kind} named {name!r} ({existing.__module__}.{existing.__qualname__}); "
            f"fspo_verl will not shadow it. Upgrade fspo-verl or pin verl<0.10."
        )


def register_policy_loss_once(name: str) -> Callable[[Callable], Callable]:
    """Like ``core_algos.register_policy_loss`` but never overwrites a loss fspo_verl does not own."""

    def decorator(fn: Callable) -> Callable:
        _claim(core_algos.POLICY_LOSS_REGISTRY, name, "policy loss")
        core_algos.POLICY_LOSS_REGISTRY[name] = fn
        return fn

    return decorator


def register_adv_est_once(name: str) -> Callable[[Callable], Callable]:
    """Like ``core_algos.register_adv_est`` but idempotent across reloads of our own modules."""

    def decorator(fn: Callable) -> Callable:
        _claim(core_algos.ADV_ESTIMATOR_REGISTRY, name, "advantage estimator")
        core_algos.ADV_ESTIMATOR_REGISTRY.pop(name, None)
        return core_algos.register_adv_est(name)(fn)

    return decorator
