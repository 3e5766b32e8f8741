"""One line per problem: the key, its value, what goes wrong, and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


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
