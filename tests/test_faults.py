"""Faults a run meets in the driver, without training: a second run in a locked directory, a resume whose
tracker names a step that is gone, and a write error (a full disk) while the run records itself.

Each test fails on the code before these mechanisms: a second ``train`` in a busy directory reached
``ray.init``; resume ran verl's ``auto`` mode (from scratch); the status file was truncated by a failing write
and the summary never printed. The write error is a real one from the kernel: the subprocess lowers
``RLIMIT_FSIZE`` (no root or tmpfs needed), so the write fails with EFBIG at the same call a full disk fails
with ENOSPC. ``tests/e2e/test_faults_e2e.py`` runs the concurrent-run and SIGTERM faults on the real trainer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from _bad_inputs import make_checkpoints
from _no_ray_cli import RAY_STARTED

from fspo_verl.cli.run_dir import LOCK_FILE, RunDirBusy, RunLock

HERE = Path(__file__).parent


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=_env(), check=False)


def _train(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``fspo-verl train`` up to ``ray.init`` (tests/_no_ray_cli.py exits RAY_STARTED there)."""
    marker = tmp_path / "ray_started"
    done = subprocess.run([sys.executable, str(HERE / "_no_ray_cli.py"), str(marker), "train", *overrides],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(), check=False)
    return done, marker


# --- a run directory is used by one run at a time


HOLD = """
import sys, time
from fspo_verl.cli.run_dir import RunLock
lock = RunLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_names_the_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        try:
            RunLock(tmp_path)
            raise AssertionError("a second lock was granted")
        except RunDirBusy as busy:
            assert busy.pid == str(holder.pid) and str(tmp_path.resolve()) in str(busy) and "hydra.run.dir" in str(busy)
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
        holder.wait(timeout=30)
    RunLock(tmp_path).release()  # no stale lock
    assert (tmp_path / LOCK_FILE).is_file()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_train_in_a_busy_directory_is_refused_before_ray(tmp_path):
    run_dir = tmp_path / "run"
    lock = RunLock(run_dir)  # this process plays the first run
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- data.seed=1\n")  # the first run's record
    before = _files(run_dir)
    try:
        done, marker = _train(tmp_path, f"hydra.run.dir={run_dir}", "trainer.total_training_steps=1")
    finally:
        lock.release()
    assert done.returncode == 1, done.stderr[-3000:]
    assert not marker.exists(), "the second run started Ray"
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert f"hydra.run.dir={run_dir.resolve()}" in errors[0] and f"PID {os.getpid()}" in errors[0], errors
    assert not list(run_dir.glob("metrics_*.jsonl")), "the refused run reserved files"
    assert _files(run_dir) == before, "the refused run wrote into the first run's directory"


def _hydra_record(folder: Path) -> dict[str, object]:
    return {name: yaml.safe_load((folder / ".hydra" / name).read_text()) for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}


def test_a_run_and_a_sweep_job_get_hydras_record_of_the_job(tmp_path, built_demo_cache):
    """``.hydra/`` written by the app once it holds the lock has the three files Hydra writes, with the same
    content as Hydra's own (``hydra.output_subdir=.hydra``, written before the lock): the job's config, the
    hydra node, the job's overrides. A sweep job gets its own overrides; a user's hydra.output_subdir=null
    writes none."""
    ours, hydras, sweep, none = (tmp_path / name for name in ("ours", "hydras", "sweep", "none"))
    task = ["trainer.total_training_steps=1", "data.seed=3"]
    for run_dir, extra in ((ours, []), (hydras, ["hydra.output_subdir=.hydra"]), (none, ["hydra.output_subdir=null"])):
        done, _ = _train(tmp_path, *task, f"hydra.run.dir={run_dir}", *extra)
        assert done.returncode == RAY_STARTED, done.stderr[-3000:]
    record, reference = _hydra_record(ours), _hydra_record(hydras)
    assert record["overrides.yaml"] == task == reference["overrides.yaml"]
    assert record["config.yaml"] == reference["config.yaml"]
    assert record["config.yaml"]["trainer"]["default_local_dir"].startswith("checkpoints/")  # as composed, unresolved
    assert record["hydra.yaml"]["hydra"]["output_subdir"] is None
    assert record["hydra.yaml"]["hydra"]["runtime"]["output_dir"] == str(ours.resolve())
    for hydra in (record["hydra.yaml"]["hydra"], reference["hydra.yaml"]["hydra"]):
        for key in ("output_subdir", "runtime", "run", "overrides"):
            hydra.pop(key)
    assert record["hydra.yaml"] == reference["hydra.yaml"]
    assert not (none / ".hydra").exists()

    done, _ = _train(tmp_path, "-m", "data.seed=5,6", "trainer.total_training_steps=1", f"hydra.sweep.dir={sweep}")
    assert done.returncode == RAY_STARTED, done.stderr[-3000:]  # job 0 reached ray.init
    job = _hydra_record(sweep / "0")
    assert job["overrides.yaml"] == ["data.seed=5", "trainer.total_training_steps=1"]
    assert job["hydra.yaml"]["hydra"]["job"]["num"] == 0 and job["config.yaml"]["data"]["seed"] == 5


# --- resume never silently discards work


def test_resume_falls_back_to_the_newest_intact_step_and_says_so(tmp_path):
    ckpt = make_checkpoints(tmp_path / "ckpt", steps=(2,))
    (ckpt / "latest_checkpointed_iteration.txt").write_text("7")  # names a step that is gone
    (ckpt / "global_step_9" / "actor").mkdir(parents=True)  # above the tracker: a save that never finished
    run_dir = tmp_path / "run"
    done, marker = _train(tmp_path, f"hydra.run.dir={run_dir}", f"trainer.default_local_dir={ckpt}",
                          "trainer.total_training_steps=1")
    assert done.returncode == RAY_STARTED and marker.exists(), done.stderr[-3000:]
    trainer = yaml.safe_load((run_dir / "config_0.yaml").read_text())["trainer"]
    assert trainer["resume_mode"] == "resume_path"
    assert trainer["resume_from_path"] == str((ckpt / "global_step_2").resolve())
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING: trainer.resume_mode=auto")]
    assert any("global_step_2" in w for w in warnings), done.stderr[-3000:]


def test_resume_with_nothing_intact_stops_with_the_override(tmp_path):
    from fspo_verl.cli.validate import compose
    from fspo_verl.preflight.registry import run_checks

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "latest_checkpointed_iteration.txt").write_text("7")
    errors = run_checks(compose([f"trainer.default_local_dir={ckpt}"])).errors
    assert any(e.startswith("trainer.resume_mode=auto:") and "trainer.resume_mode=disable" in e for e in errors), errors


# --- a write error while the run records itself


WRITE_STATUS_UNDER_A_LIMIT = """
import json, resource, signal, sys
from pathlib import Path
from fspo_verl.cli.run_dir import RunFiles

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as a full disk with ENOSPC
files = RunFiles(Path(sys.argv[1]), 0)
files.write_status("ok", note="written before the disk filled")
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
try:
    files.write_status("failed", error="x" * 4096)
except OSError as err:
    print("WRITE ERROR", err.strerror if err.strerror else err)
"""


def test_a_failed_status_write_keeps_the_previous_file_whole(tmp_path):
    done = _python(WRITE_STATUS_UNDER_A_LIMIT, str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    status = tmp_path / "status_0.json"
    assert json.loads(status.read_text())["note"] == "written before the disk filled"  # not truncated, not partial
    line = done.stdout.strip()
    assert line.startswith("WRITE ERROR cannot write") and str(status) in line and "needs" in line, line
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


FINISH_UNDER_A_LIMIT = """
import resource, signal, sys
from pathlib import Path
from fspo_verl.cli.app import finish_job
from fspo_verl.cli.run_dir import RunFiles

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
folder = Path(sys.argv[1])
files = RunFiles(folder, 0)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
error = "OSError: [Errno 28] No space left on device: '" + str(folder / "checkpoints" / "global_step_1" / "data.pt") + "'"
finish_job(files, "failed", error, folder / "checkpoints")
"""


def test_a_full_disk_ends_with_one_line_and_the_summary(tmp_path):
    done = _python(FINISH_UNDER_A_LIMIT, str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: cannot write {tmp_path / 'status_0.json'}"), errors
    assert "fspo-verl train: run 0 failed" in done.stdout and "No space left on device" in done.stdout, done.stdout
    assert not (tmp_path / "status_0.json").exists()  # absent, never 0 bytes


def test_a_workers_write_error_becomes_one_line_with_the_path(tmp_path):
    from fspo_verl.cli.app import write_error_note

    path = tmp_path / "checkpoints" / "global_step_1" / "actor" / "model_world_size_2_rank_0.pt"
    relayed = RuntimeError(f"ray::WorkerDict.save_checkpoint() (pid=1)\n  File x\nOSError: [Errno 28] No space left on device: '{path}'")
    note = write_error_note(relayed)
    assert note is not None and "\n" not in note
    assert note.startswith(f"cannot write {path}: No space left on device") and "bytes free there" in note
    assert "bytes needed not known: no checkpoint before global_step_1" in note
    assert write_error_note(RuntimeError("ValueError: something else")) is None


def _relayed(cause: OSError, worker: str, caller: str) -> BaseException:
    """``cause`` as the driver gets it from Ray: raised in ``worker`` (a ``RayTaskError(OSError)``, Ray's class
    that is both), re-raised by ``caller`` (a plain RayTaskError: Ray cannot subclass it twice), each level
    carrying the traceback text of the level below."""
    import traceback

    from ray.exceptions import RayTaskError

    def traced(err: BaseException) -> str:
        return "".join(traceback.format_exception(err))

    inner = RayTaskError(worker, traced(cause), cause, proctitle=f"ray::{worker}", pid=1234, ip="127.0.0.1")
    inner = inner.as_instanceof_cause()
    return RayTaskError(caller, traced(inner), inner, proctitle=f"ray::{caller}", pid=1235, ip="127.0.0.1")


def test_a_workers_full_disk_names_the_bytes_from_the_previous_checkpoint(tmp_path):
    from fspo_verl.cli.app import write_error_note

    checkpoints = tmp_path / "checkpoints"
    for name, size in (("model_world_size_1_rank_0.pt", 3000), ("optim_world_size_1_rank_0.pt", 1500)):
        (checkpoints / "global_step_2" / "actor").mkdir(parents=True, exist_ok=True)
        (checkpoints / "global_step_2" / "actor" / name).write_bytes(b"x" * size)
    (checkpoints / "global_step_1" / "actor").mkdir(parents=True)  # older, smaller: not the estimate
    (checkpoints / "global_step_4" / "actor").mkdir(parents=True)  # the save cut short
    path = checkpoints / "global_step_4" / "actor" / "model_world_size_1_rank_0.pt"
    relayed = _relayed(OSError(28, "No space left on device", str(path)), "WorkerDict.actor_rollout_save_checkpoint",
                       "TaskRunner.run")
    assert isinstance(relayed.cause, OSError) and not isinstance(relayed, OSError)  # the OSError is text by now
    note = write_error_note(relayed)
    assert note is not None and "\n" not in note, note
    assert note.startswith(f"cannot write {path}: No space left on device (needs about 4,500 bytes, the size of the "
                           "previous checkpoint global_step_2; "), note
    assert note.endswith(" bytes free there)"), note


# --- SIGINT (Ctrl-C) stops a job as SIGTERM does (tests/e2e/test_faults_e2e.py: SIGTERM on the real trainer)


INTERRUPTED_JOB = """
import os, signal, sys, time
import fspo_verl.cli.app as app

def train(config, files):  # in place of verl's trainer: Ctrl-C arrives while the driver waits
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(120)
    raise AssertionError("SIGINT did not stop the job")

app._train = train
from fspo_verl.cli import main
sys.exit(main(["train", "trainer.total_training_steps=1", "hydra.run.dir=" + sys.argv[1]]))
"""


def test_sigint_stops_a_job_cleanly_with_exit_130(tmp_path, built_demo_cache):
    """The app's whole path (Hydra, the lock, the checks, the stop, the summary) with SIGINT; only verl's
    trainer is replaced. Fails without the handler: the process dies of KeyboardInterrupt with no status file."""
    run_dir = tmp_path / "run"
    done = _python(INTERRUPTED_JOB, str(run_dir), cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-3000:]
    status = json.loads((run_dir / "status_0.json").read_text())
    assert status["status"] == "stopped" and status["error"] == "stopped by SIGINT", status
    assert done.stdout.count("fspo-verl train: run 0 stopped") == 1, done.stdout
    assert "KeyboardInterrupt" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
