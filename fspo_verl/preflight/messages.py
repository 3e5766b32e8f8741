"""One line per problem: the key, its value, what goes wrong, and the fix."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf


def shown(value: Any) -> str:
    """A value as a user would type it on the command line."""
    if isinstance(value, str):
        return value if value and " " not in value else repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def problem(key: str, value: Any, why: str, fix: str) -> str:
    """``key=value: why. Fix: fix`` on one line (newlines in the parts are folded)."""
    text = f"{key}={shown(value)}: {why.rstrip('.')}. Fix: {fix.rstrip('.')}."
    return " ".join(text.split())


def closest(value: Any, names: Iterable[str]) -> str:
    """' (did you mean X?)' when a registered name is close to ``value``, else ''."""
    guess = difflib.get_close_matches(str(value), sorted(names), n=1, cutoff=0.6)
    return f" (did you mean {guess[0]}?)" if guess else ""


def error_text(err: BaseException) -> str:
    """``Type: message`` of the innermost exception of a chain (Hydra wraps the real one), on one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("full_key")]
    inner = next((line for line in lines if not line.startswith(("Error in call to target", "Error locating target"))), lines[0] if lines else "")
    return f"{type(err).__name__}: {inner}"


#: a plain reference ``${a.b}`` or ``${oc.select:a.b,default}``: the key a derived value comes from
_REFERENCE = re.compile(r"^\$\{(?:oc\.select:)?\s*([\w.]+)\s*(?:,[^{}]*|,\$\{[^{}]*\})?\}$")


def source_key(config: DictConfig, key: str) -> str:
    """The key the user set for ``key``: follows plain ``${other.key}`` / ``${oc.select:other.key,...}``
    references (preset lines like ``rollout.n: ${oc.select:fspo_verl.task.group_size,8}``) to the key that
    holds a value, so a message names what the user typed, not a key derived from it."""
    seen = {key}
    while True:
        try:
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(config, parent_key) if parent_key else config
            raw = parent._get_node(leaf)._value() if isinstance(parent, DictConfig) and leaf in parent else None
        except Exception:  # noqa: BLE001 - an unresolvable chain: name the key itself
            return key
        match = _REFERENCE.match(raw) if isinstance(raw, str) else None
        if match is None:
            return key
        target = match[1]
        if target in seen or OmegaConf.select(config, target, default=_ABSENT) is _ABSENT:
            return key
        seen.add(target)
        key = target


_ABSENT = object()


def sourced_problem(config: DictConfig, key: str, value: Any, why: str, fix: str) -> str:
    """:func:`problem` about the key the user set: ``source=value: why (it sets key)``, the fix on the source."""
    source = source_key(config, key)
    if source == key:
        return problem(key, value, why, fix)
    return problem(source, value, f"{why} (it sets {key} = ${{{source}}})", fix.replace(key, source))
