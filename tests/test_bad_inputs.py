"""Every bad input of the corpus (tests/_bad_inputs.py) is rejected in the driver, before Ray starts.

For each row: ``fspo-verl validate`` exits 1 within 15 CPU seconds of this process, an ``ERROR`` line names the row's key as
``key=value``, and Ray was never started (``ray.init`` is replaced by a recorder, and no Ray process is
left as a child). A few rows also run in a subprocess, and three through ``fspo-verl train``, whose
positive control (a good config) shows that the recorder does see ``train`` start Ray.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from _bad_inputs import CORPUS, GENERAL, make_bad_files
from _no_ray_cli import RAY_STARTED

from fspo_verl.cli import main as cli

HERE = Path(__file__).parent
#: CPU seconds (this process, all threads) for one in-process validate of a bad input: a bound against a check that
#: does real work (starts Ray, loads a model, reads a dataset in full). CPU time, not wall-clock, so that a busy
#: machine slows the test without failing it.
LIMIT_S = 15.0
#: a fresh ``fspo-verl validate`` process, imports included. A bound against a validate that does real work
#: (starts Ray, loads a model, reads a dataset in full), not a speed target: importing verl and torch alone
#: took 15-16 CPU s on a 2-core VM (2026-12-02), where an earlier VM took far less,
#: so a 15-s limit failed on the machine, not on the code.
FRESH_PROCESS_CPU_LIMIT_S = 60.0
BY_NAME = {row.name: row for row in CORPUS}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    return make_bad_files(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def warm():
    """One good validate first, so that the timed calls do not pay for importing verl and torch."""
    assert cli(["validate"]) == 0


@pytest.fixture
def ray_recorder(monkeypatch):
    import ray

    calls: list = []

    def record_init(*args, **kwargs):
        calls.append((args, kwargs))
        raise RuntimeError("a check started Ray")

    monkeypatch.setattr(ray, "init", record_init)
    yield calls
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    assert not calls and not ray.is_initialized(), "Ray was started"
    assert not any(n.startswith(("raylet", "gcs_server")) for n in children), children


def _args(row, bad_dir: Path) -> list[str]:
    return [o.format(d=bad_dir) for o in row.overrides]


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR: ")]


def test_corpus_is_large_and_covers_the_issue():
    assert len(CORPUS) >= 90
    assert len({row.name for row in CORPUS}) == len(CORPUS)
    counts = Counter("general" if row.mechanism in GENERAL else "specific" for row in CORPUS)
    assert counts["general"] > counts["specific"], counts


@pytest.mark.parametrize("row", CORPUS, ids=[row.name for row in CORPUS])
def test_validate_rejects_in_the_driver(row, bad_dir, warm, ray_recorder, monkeypatch, capsys):
    for name, value in row.env.items():
        monkeypatch.setenv(name, value.format(d=bad_dir))
    capsys.readouterr()
    start = time.process_time()
    status = cli(["validate", *_args(row, bad_dir)])
    elapsed = time.process_time() - start
    errors = _errors(capsys.readouterr().err)
    assert status == 1, f"{row.name}: accepted"
    named = [e for e in errors if f"{row.key}=" in e]
    assert named, f"{row.name}: no error names {row.key}:\n" + "\n".join(errors)
    assert any("Fix:" in e for e in named), named
    assert not [e for e in errors if any(raw in e for raw in INTERNAL)], errors
    assert elapsed < LIMIT_S, f"{row.name}: {elapsed:.1f} CPU s"


#: what a message must never say: a check's crash, or an exception verl raised on a value a check names
INTERNAL = ("could not read the config", "ZeroDivisionError", "TypeError: '<' not supported")
#: rows whose every line must name the user's key: no line blames a key derived from it, no second raw line
ONLY_THE_USERS_KEY = ("group_size zero", "nnodes zero", "n_gpus_per_node zero", "mini-batch a word", "mini-batch larger than the batch")


@pytest.mark.parametrize("name", ONLY_THE_USERS_KEY)
def test_every_line_names_the_users_key(name, bad_dir, warm, capsys):
    row = BY_NAME[name]
    capsys.readouterr()
    assert cli(["validate", *_args(row, bad_dir)]) == 1
    errors = _errors(capsys.readouterr().err)
    assert errors and all(f"{row.key}=" in e for e in errors), errors


def _subprocess(command: str, row, bad_dir: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path, float]:
    marker = tmp_path / "ray_started"
    # the checkout under test first, as `python -m pytest` has it for the in-process tests
    path = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **{k: v.format(d=bad_dir) for k, v in row.env.items()}, "PYTHONPATH": path}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, str(HERE / "_no_ray_cli.py"), str(marker), command, *_args(row, bad_dir)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, marker, cpu


def _assert_rejected_without_ray(done: subprocess.CompletedProcess, marker: Path, key: str) -> None:
    assert done.returncode == 1, done.stderr[-2000:]
    assert any(f"{key}=" in e for e in _errors(done.stderr)), done.stderr[-2000:]
    assert not marker.exists(), marker.read_text()


SUBPROCESS_ROWS = ("loss_mode typo", "train_files a CSV", "latest checkpoint half-written")


@pytest.mark.parametrize("name", SUBPROCESS_ROWS)
def test_validate_rejects_in_a_fresh_process(name, bad_dir, tmp_path):
    """Whole command, fresh interpreter. Timed in CPU seconds (import included), which a loaded machine does not inflate."""
    row = BY_NAME[name]
    done, marker, cpu = _subprocess("validate", row, bad_dir, tmp_path)
    _assert_rejected_without_ray(done, marker, row.key)
    assert cpu < FRESH_PROCESS_CPU_LIMIT_S, f"{cpu:.1f} CPU s"


TRAIN_ROWS = ("negative learning rate", "train_files without verl's columns", "plugin disabled")


@pytest.mark.parametrize("name", TRAIN_ROWS)
def test_train_rejects_before_ray(name, bad_dir, tmp_path):
    row = BY_NAME[name]
    done, marker, _ = _subprocess("train", row, bad_dir, tmp_path)
    _assert_rejected_without_ray(done, marker, row.key)
    assert "not started" in done.stderr


def test_train_harness_sees_ray_start(bad_dir, tmp_path):
    """Positive control: a good config gets through the checks to ray.init, and the recorder sees it."""
    row = BY_NAME["loss_mode typo"]
    good = type(row)("good", (), row.key, row.mechanism, {})
    done, marker, _ = _subprocess("train", good, bad_dir, tmp_path)
    assert done.returncode == RAY_STARTED, done.stderr[-2000:]
    assert marker.exists()


def test_files_elsewhere_turns_only_absent_paths_into_warnings(bad_dir, capsys, monkeypatch):
    """FSPO_VERL_FILES_ELSEWHERE=1 (a submission script validating away from the cluster): an absent file warns,
    a file that is here and bad is still an error."""
    monkeypatch.setenv("FSPO_VERL_FILES_ELSEWHERE", "1")
    assert cli(["validate", *_args(BY_NAME["train_files missing"], bad_dir)]) == 0
    assert "WARNING: data.train_files=" in capsys.readouterr().err
    assert cli(["validate", *_args(BY_NAME["train_files a CSV"], bad_dir)]) == 1


def _module_check(mechanism: str):
    import importlib

    from fspo_verl.preflight.registry import CHECKS

    module = importlib.import_module(f"fspo_verl.preflight.{mechanism}")
    (check,) = [fn for fn in vars(module).values() if fn in CHECKS and fn.__module__ == module.__name__]
    return check


@pytest.mark.parametrize("row", CORPUS, ids=[row.name for row in CORPUS])
def test_the_recorded_mechanism_is_the_one_that_catches_it(row, bad_dir, monkeypatch):
    """Keeps the general-vs-specific count of the corpus honest: the row's own module names its key."""
    from fspo_verl.cli.validate import compose
    from fspo_verl.preflight.registry import load_checks

    for name, value in row.env.items():
        monkeypatch.setenv(name, value.format(d=bad_dir))
    load_checks()  # imports the modules of fspo_verl.preflight, registering their checks
    errors = _module_check(row.mechanism)(compose(_args(row, bad_dir))).errors
    assert any(f"{row.key}=" in e for e in errors), errors
