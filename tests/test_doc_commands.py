"""Every ``fspo-verl train`` / ``fspo-verl validate`` command shown in README.md, docs/ and benchmarks/README.md
composes and passes the driver checks, as ``fspo-verl validate`` runs them (one import of verl for all).

Where the commands are read: fenced code blocks, 4-space indented blocks and inline code spans. A command
whose trailing ``#`` comment says ``needs`` (weights, data: files a user has and the test cannot) is checked
with ``FSPO_VERL_FILES_ELSEWHERE=1``: composition and every check but "does not exist". A ``-m`` sweep is
expanded into its jobs as ``fspo-verl train -m`` would launch them, of which those that together hold every
swept value are checked. ``...`` stands for "your other
overrides" and ``key=<...>`` for a value of your choice; both are dropped here. Commands that are
not a configuration (``--help``, ``-sc install=bash``, ``--cfg``'s printing flags are dropped) are listed in
NOT_A_CONFIG, so a new one cannot hide there silently.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)*fspo-verl\s+(train|validate)(?=\s|$)(.*)$")
# Flags of `fspo-verl train` that print or pick a config place instead of taking overrides: the command is no
# configuration to check (drop-flags are removed and the rest is checked).
NOT_A_CONFIG = {"--help", "-sc", "-cp", "-cn", "--info"}
DROP_FLAGS = {"--resolve": 0, "--cfg": 1, "-p": 1, "--package": 1}
ELSEWHERE_MARK = "needs"


def _code_lines(text: str) -> list[str]:
    """Lines of fenced and indented code blocks, with backslash continuations joined, plus inline spans."""
    lines: list[str] = []
    fenced = False
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or raw.startswith("    "):
            lines.append(raw.strip())
        else:
            # a span that only names the command (`fspo-verl train`) is prose; one with an override is a command
            lines += [s for s in re.findall(r"`([^`]*fspo-verl (?:train|validate)[^`]*)`", raw) if "=" in s]
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line
        else:
            joined.append(line)
    return joined


def doc_commands() -> list[tuple[str, str]]:
    """(where, command line) for every fspo-verl train/validate command in the docs."""
    found = []
    for path in DOCS:
        for line in _code_lines(path.read_text()):
            if COMMAND.match(line.strip()):
                found.append((f"{path.relative_to(ROOT)}", line.strip()))
    return found


def to_overrides(line: str) -> tuple[list[str] | None, bool]:
    """(the overrides to check, or None when it is no configuration; whether the files live elsewhere)."""
    command, _, comment = line.partition(" # ")
    elsewhere = ELSEWHERE_MARK in comment
    words = shlex.split(command)
    words = words[words.index("fspo-verl") + 2 :]
    if any(w in NOT_A_CONFIG for w in words):
        return None, elsewhere
    out: list[str] = []
    skip = 0
    for word in words:
        if skip:
            skip -= 1
            continue
        if word in DROP_FLAGS:
            skip = DROP_FLAGS[word]
            continue
        if word == "..." or word.endswith("=...") or re.search(r"=<[^>]*>$", word):
            continue
        out.append(word)
    return out, elsewhere


def covering(jobs: list[list[str]]) -> list[list[str]]:
    """The jobs of a sweep that together hold every swept value at least once (a sweep's jobs differ only in
    them): ``a=1,2,3 b=x,y`` checks 3 jobs, not 6."""
    seen: set[str] = set()
    kept = []
    for job in jobs:
        if not set(job) <= seen:
            kept.append(job)
            seen |= set(job)
    return kept


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    """The extraction finds the commands: README's quick starts and the docs' (a reader would see them)."""
    where = {w for w, _ in COMMANDS}
    assert "README.md" in where and "docs/cli.md" in where and "docs/length-fairness.md" in where, where
    assert len(COMMANDS) >= 20, COMMANDS


def test_a_sweep_is_covered_by_one_job_per_value():
    jobs = [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"], ["a=3", "b=x"], ["a=3", "b=y"]]
    assert covering(jobs) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=3", "b=x"]]


def test_extraction_joins_continuations_and_reads_marks():
    text = "```bash\nfspo-verl train -m a=1,2 \\\n  b=3   # needs weights\n```\nsee `fspo-verl validate c=4 ...`\n"
    lines = _code_lines(text)
    assert lines == ["fspo-verl train -m a=1,2 b=3   # needs weights", "fspo-verl validate c=4 ..."]
    assert to_overrides(lines[0]) == (["-m", "a=1,2", "b=3"], True)
    assert to_overrides(lines[1]) == (["c=4"], False)
    assert to_overrides("fspo-verl train --help") == (None, False)
    assert to_overrides("FOO=1 fspo-verl train --cfg job --resolve algorithm=gspo") == (["algorithm=gspo"], False)


@pytest.mark.slow
def test_every_doc_command_validates(monkeypatch):
    from fspo_verl.cli.validate import MULTIRUN_FLAGS, sweep_jobs, validate

    failures = []
    checked = 0
    for where, line in COMMANDS:
        overrides, elsewhere = to_overrides(line)
        if overrides is None:
            continue
        if elsewhere:
            monkeypatch.setenv("FSPO_VERL_FILES_ELSEWHERE", "1")
        else:
            monkeypatch.delenv("FSPO_VERL_FILES_ELSEWHERE", raising=False)
        sweep = any(flag in overrides for flag in MULTIRUN_FLAGS)
        plain = [o for o in overrides if o not in MULTIRUN_FLAGS]
        for job in covering(sweep_jobs(plain)) if sweep else [plain]:
            checked += 1
            resolved, found = validate(job)
            if resolved is None:
                failures.append(f"{where}: {line}\n    job {job}: {found.errors}")
    assert not failures, "\n".join(failures)
    assert checked >= 20
