"""``fspo-verl validate | list``: compose our presets over verl's ppo_trainer with Hydra's compose API.

The root config ``fspo_verl/configs/fspo_trainer.yaml`` extends verl's own ``ppo_trainer.yaml`` through
Hydra's search path (``pkg://verl.trainer.config``), so every verl key keeps its default and meaning.
Groups and their options: ``fspo-verl list`` or ``fspo-verl train --help`` (:mod:`fspo_verl.cli.presets`).

``validate`` composes and runs every check of ``fspo_verl.preflight.registry`` (verl's ``validate_config`` included)
and prints every problem at once. ``fspo-verl train`` is the Hydra application of :mod:`fspo_verl.cli.app`;
it runs the same checks for every job before anything starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fspo_verl.cli.app import print_findings
from fspo_verl.cli.presets import (
    CONFIG_MODULE,
    GROUPS,
    ROOT_CONFIG,
    presets,
    with_search_path,
)
from fspo_verl.preflight.registry import Findings, run_checks

__all__ = ["GROUPS", "ComposeError", "compose", "list_main", "presets", "sweep_jobs", "validate", "validate_main"]


class ComposeError(Exception):
    """The overrides do not compose (unknown group option, bad syntax, unknown key)."""


def compose(overrides: list[str]) -> DictConfig:
    """verl's ppo_trainer + our presets + ``overrides``, composed by Hydra (not resolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            return hydra_compose(config_name=ROOT_CONFIG, overrides=with_search_path(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ComposeError(f"cannot compose the config from {list(overrides)}: {err}") from None
    finally:
        GlobalHydra.instance().clear()


def validate(overrides: list[str]) -> tuple[str | None, Findings]:
    """What ``fspo-verl validate OVERRIDES`` finds, in this process: (the resolved config as YAML, or None when
    it has errors; every problem). Several override sets can be validated in one process with one import of
    verl (``validate -m``; tests/test_preset_pairs.py checks every algorithm x data pair this way)."""
    try:
        config = compose(overrides)
    except ComposeError as err:
        return None, Findings(errors=[str(err)])
    found = run_checks(config)
    if found.errors:
        return None, found
    try:
        return OmegaConf.to_yaml(config, resolve=True), found
    except Exception as err:  # noqa: BLE001 - an interpolation that cannot resolve is a problem too
        found.errors.append(f"the config does not resolve: {type(err).__name__}: {err}")
        return None, found


MULTIRUN_FLAGS = ("-m", "--multirun")


def sweep_jobs(argv: list[str]) -> list[list[str]]:
    """The jobs of a sweep written as for ``fspo-verl train -m`` (``a=x,y b=1,2``: the cartesian product), each a
    list of overrides, in the order Hydra's basic sweeper launches them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(argv))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def validate_main(argv: list[str]) -> int:
    """Compose and check only. Prints the resolved config, or every problem found; exit 1 on any error.

    With ``-m``/``--multirun`` the overrides are a sweep, as for ``fspo-verl train -m``: every job is composed and
    checked in this one process (one import of verl and torch for the whole sweep), each job's resolved config
    printed after a ``# job <n>: <overrides>`` line, each problem prefixed with its job.

    With ``--jobs FILE`` (``-`` for standard input) each non-blank line of FILE that is not a ``#`` comment is one
    sweep (``algorithm=pods keep=4 data.seed=1,2,3``), the other arguments are added to every line, and every job
    of every line is checked in this one process: the way to check a recipe whose jobs are not one cartesian
    product (``recipes/claims_cpu.sh``).
    """
    if JOBS_FLAG in argv:
        at = argv.index(JOBS_FLAG)
        if at + 1 == len(argv):
            print(f"ERROR: {JOBS_FLAG} needs a file (one sweep a line; - for standard input)", file=sys.stderr)
            return 1
        rest = [a for a in argv[:at] + argv[at + 2 :] if a not in MULTIRUN_FLAGS]
        return _validate_job_lines(argv[at + 1], rest)
    if any(flag in argv for flag in MULTIRUN_FLAGS):
        return _validate_sweep([a for a in argv if a not in MULTIRUN_FLAGS])
    resolved, found = validate(argv)
    if resolved is not None:
        print(resolved)
    print_findings(found)
    if found.errors:
        print(f"fspo-verl validate: {len(found.errors)} problem(s) found", file=sys.stderr)
        return 1
    print("fspo-verl validate: OK", file=sys.stderr)
    return 0


JOBS_FLAG = "--jobs"


def _sweep_or_error(argv: list[str]) -> list[list[str]] | None:
    try:
        return sweep_jobs(argv)
    except Exception as err:  # noqa: BLE001 - Hydra's parser raises its own errors for bad sweep syntax
        print(f"ERROR: cannot read the sweep {' '.join(argv)}: {err}", file=sys.stderr)
        print("fspo-verl validate: 1 problem(s) found", file=sys.stderr)
        return None


def _validate_job_lines(source: str, extra: list[str]) -> int:
    import shlex

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as err:
        print(f"ERROR: {JOBS_FLAG} {source}: cannot read it ({err.strerror or err})", file=sys.stderr)
        return 1
    jobs: list[list[str]] = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            expanded = _sweep_or_error([*shlex.split(line), *extra])
            if expanded is None:
                return 1
            jobs += expanded
    if not jobs:
        print(f"ERROR: {JOBS_FLAG} {source}: no job (one sweep a line)", file=sys.stderr)
        return 1
    return _check_jobs(jobs)


def _validate_sweep(argv: list[str]) -> int:
    jobs = _sweep_or_error(argv)
    return 1 if jobs is None else _check_jobs(jobs)


def _check_jobs(jobs: list[list[str]]) -> int:
    problems = failing = 0
    for num, job in enumerate(jobs):
        resolved, found = validate(job)
        if resolved is not None:
            print(f"# job {num}: {' '.join(job)}\n{resolved}")
        print_findings(found, prefix=f"job {num} {' '.join(job)}: ")
        problems += len(found.errors)
        failing += bool(found.errors)
    if failing:
        print(f"fspo-verl validate: {problems} problem(s) found in {failing} of {len(jobs)} job(s)", file=sys.stderr)
        return 1
    print(f"fspo-verl validate: OK ({len(jobs)} job(s))", file=sys.stderr)
    return 0


def list_main(argv: list[str]) -> int:
    """The presets of each group and the names fspo_verl registers into verl."""
    from fspo_verl import _registration

    for group in GROUPS:
        print(f"{group + '=':<14} {' '.join(presets(group))}")
    present = {kind: lookup() for kind, lookup in _registration.REGISTRIES.items()}
    ours = {(kind, name) for kind, name in _registration.EXPECTED}
    print("\nregistered (ours marked *):")
    for kind, names in present.items():
        listed = " ".join(f"{n}*" if (kind, n) in ours else n for n in sorted(names))
        print(f"  {kind + ':':<15} {listed}")
    return 0

