"""The preset groups we ship (``fspo_verl/configs/<group>/<option>.yaml``) and their one-line descriptions.

A preset's description is the first sentence of the comment block at the top of its file (Hydra's
``# @package`` directive skipped), so the file stays the one place that explains a preset.
"""

from __future__ import annotations

import re
from importlib import resources

CONFIG_MODULE = "fspo_verl.configs"
ROOT_CONFIG = "fspo_trainer"
GROUPS = ("algorithm", "downsampling", "model", "data", "cluster")
#: where Hydra finds our presets and verl's own ppo_trainer.yaml; given as a command-line override because
#: Hydra takes hydra.searchpath only from the primary config or the command line, and the primary config
#: may be a user's own that builds on ours (-cp/-cn)
SEARCH_PATH = ("pkg://fspo_verl.configs", "pkg://verl.trainer.config")


def with_search_path(overrides: list[str]) -> list[str]:
    """``overrides`` with ``hydra.searchpath`` set to SEARCH_PATH, unless they set it themselves."""
    if any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        return list(overrides)
    return [f"hydra.searchpath=[{','.join(SEARCH_PATH)}]", *overrides]
#: a description longer than this is cut at a word boundary (our choice: one terminal line with the name)
MAX_DESCRIPTION = 100
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def presets(group: str) -> list[str]:
    """Option names we ship for a group (verl's own options of the same group are not listed)."""
    folder = resources.files(CONFIG_MODULE) / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def description(group: str, option: str) -> str:
    """The first sentence of the preset file's leading comment, at most MAX_DESCRIPTION characters."""
    text = (resources.files(CONFIG_MODULE) / group / f"{option}.yaml").read_text()
    words: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        body = stripped.lstrip("#").strip()
        if body.startswith("@package"):
            continue
        if not body:
            if words:
                break
            continue
        words.append(body)
    first = _SENTENCE_END.split(" ".join(words), maxsplit=1)[0] if words else ""
    if len(first) > MAX_DESCRIPTION:
        first = first[: MAX_DESCRIPTION - 3].rsplit(" ", 1)[0].rstrip(",;:.") + "..."
    return first
