"""The one registry of driver checks, and the run over all of them.

Every check takes the composed config and returns :class:`Findings` (errors, warnings); a module registers
one with ``@register_check`` on import. :data:`CHECK_MODULES` lists the modules of :mod:`fspo_verl.preflight`
that do, in the order their problems are reported; :func:`run_checks` imports them on first use, runs every
check, then verl's own ``validate_config``. Each problem is one complete sentence that names the key, its
value and the fix, so ``fspo-verl validate`` can print all of them at once instead of failing on the first.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig

#: modules whose import registers checks, in reporting order (the CPU backend's launcher check, registered
#: by :mod:`fspo_verl.cpu` when it is selected, comes after the first three, see ``preflight.cpu``)
CHECK_MODULES = (
    "fspo_verl.preflight.combinations",
    "fspo_verl.preflight.downsampling",
    "fspo_verl.preflight.sampler",
    "fspo_verl.preflight.checkpoints",
    "fspo_verl.preflight.data_files",
    "fspo_verl.preflight.model_files",
    "fspo_verl.preflight.names",
    "fspo_verl.preflight.places",
    "fspo_verl.preflight.resolution",
    "fspo_verl.preflight.sections",
    "fspo_verl.preflight.values",
)


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def extend(self, other: "Findings") -> None:
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)


Check = Callable[[DictConfig], Findings]
CHECKS: list[Check] = []


def register_check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def load_checks(modules: tuple[str, ...] = CHECK_MODULES) -> None:
    """Import the check modules (each registers its checks once, on its first import)."""
    for module in modules:
        importlib.import_module(module)


#: exceptions that mean a check (or verl's validate_config) tripped over a value of the wrong kind, not a
#: finding of its own: reported only when no other check named a problem (it is then the only clue)
CRASHES = (TypeError, ZeroDivisionError, AttributeError, KeyError, IndexError)


def run_checks(config: DictConfig) -> Findings:
    """All registered checks (with ``fspo_verl.preflight``'s) plus verl's own ``validate_config``.

    Never raises for a bad setting. A check that crashes on a broken config, and verl's validate_config
    when it crashes (``ZeroDivisionError`` for ``trainer.nnodes=0``) or repeats a key already named (in its
    short names), add nothing when another check has named the problem: one line per problem, in our words.
    """
    load_checks()
    found = Findings()
    crashed: list[str] = []
    for check in CHECKS:
        try:
            found.extend(check(config))
        except Exception as err:  # noqa: BLE001 - one broken key must not hide the other problems
            crashed.append(f"a setting read by {check.__name__} is not of the kind it needs ({type(err).__name__}: {err}); "
                           f"fix the keys it reads, or report this with the command line if they look right")
    verl_found, verl_crashed = _verl_validate(config)
    named = {_leaf(e) for e in found.errors} - {None}
    for error in verl_found.errors:
        if verl_crashed and found.errors:
            continue  # verl tripped over a value our checks name
        if any(re.search(rf"(?<!\w){re.escape(leaf)}(?!\w)", error) for leaf in named):
            continue  # verl's words for a key one of our lines names in full
        if not any(error.split(": ", 1)[-1] in mine for mine in found.errors):
            found.errors.append(error)
    if not found.errors:
        found.errors.extend(crashed)
    return found


def _leaf(message: str) -> str | None:
    """The last part of the key a ``key=value: ...`` message names."""
    match = re.match(r"^([\w.]+)=", message)
    return match[1].rsplit(".", 1)[-1] if match else None


def _verl_validate(config: DictConfig) -> tuple[Findings, bool]:
    """verl's validate_config; (its problem, whether it was a crash rather than one of its own checks)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    found = Findings()
    try:
        validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except Exception as err:  # noqa: BLE001 - verl raises AssertionError, ValueError or Hydra's wrappers
        from fspo_verl.preflight.messages import error_text

        inner = err
        while inner.__cause__ is not None:
            inner = inner.__cause__
        found.errors.append(f"verl's validate_config rejected the config: {error_text(err)}")
        return found, isinstance(inner, CRASHES)
    return found, False


