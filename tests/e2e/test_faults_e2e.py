"""Two faults on verl's real trainer (CPU backend): a second run in a busy directory, and SIGTERM mid-run.

One real run A trains in a directory. A second ``fspo-verl train`` there is refused in the driver, naming
the directory and A's PID, before it starts Ray (so it costs an import, not a cluster), and A's
``.hydra/overrides.yaml`` still holds A's overrides. Then A's process group
gets SIGTERM after its first logged step (``kill -- -PGID``, a scheduler): Ray's own processes get it too. A
ends with exit code 143 (not SIGABRT), its ``status_0.json`` says ``stopped``, its summary is printed, and
every process it had started is gone. Before these mechanisms both runs trained in the same directory, and
SIGTERM ended the driver by SIGABRT (Ray's crash handler) with no status file and no summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from e2e.cpu_run import LEAN_JOB
from fspo_verl.analysis.run_log import read_run
from fspo_verl.cli.run_dir import LOCK_FILE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: a lean CPU job with more steps than the test lets it run: it is stopped after its first
LEAN = [*LEAN_JOB, "trainer.total_training_steps=30", "trainer.save_freq=-1"]
#: safety nets only, several times the quiet time (start-up ~45 s, a step ~2 s on 2 idle cores)
START_TIMEOUT_S = 480
STOP_TIMEOUT_S = 180


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fspo_verl.cli", "train", *LEAN, *extra, f"hydra.run.dir={run_dir}"]


def _wait_for(condition, timeout_s: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"run A ended ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {timeout_s} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _stepped(metrics: Path) -> bool:
    try:
        return bool(read_run(metrics))
    except (OSError, ValueError):
        return False


def test_a_second_run_is_refused_and_sigterm_ends_the_first_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "run_a.log"
    with log.open("w") as out:
        first = subprocess.Popen(_command(run_dir), stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                 start_new_session=True)  # its own process group, as a shell job has
    try:
        lock = run_dir / LOCK_FILE
        _wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid), START_TIMEOUT_S, "lock", first, log)

        second = subprocess.run(_command(run_dir, "data.seed=7"), capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
        assert second.returncode == 1, second.stderr[-4000:]
        refusal = [line for line in second.stderr.splitlines() if line.startswith("ERROR: ")]
        assert len(refusal) == 1 and str(run_dir.resolve()) in refusal[0] and f"PID {first.pid}" in refusal[0], second.stderr[-4000:]
        assert "Started a local Ray instance" not in second.stdout + second.stderr
        # Hydra's record of run A is A's: the refused run wrote nothing into A's directory
        assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) == LEAN

        _wait_for(lambda: _stepped(run_dir / "metrics_0.jsonl"), START_TIMEOUT_S, "first step", first, log)
        started = [p.pid for p in psutil.Process(first.pid).children(recursive=True)]
        # the whole process group, as `kill -- -PGID` or a scheduler does: Ray's own processes get it too
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    output = log.read_text()
    assert first.returncode == 128 + signal.SIGTERM, output[-6000:]
    status = json.loads((run_dir / "status_0.json").read_text())
    assert status["status"] == "stopped" and status["error"] == "stopped by SIGTERM", status
    assert "fspo-verl train: run 0 stopped" in output, output[-4000:]
    deadline = time.monotonic() + 60
    while (alive := [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]) \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert not alive, [psutil.Process(pid).cmdline()[:3] for pid in alive if psutil.pid_exists(pid)]
    assert sorted(read_run(run_dir / "metrics_0.jsonl")), "run A's metrics were lost"
    assert not list(run_dir.glob("metrics_1.jsonl")), "the refused run reserved files"
