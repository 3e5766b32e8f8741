"""``recipes/slurm.sbatch`` for real: a private one-host SLURM 22.05 cluster, the script submitted with
``sbatch`` exactly as a user would (``GPUS_PER_NODE=0 VENV=... sbatch --nodes=1 recipes/slurm.sbatch
cluster=cpu ...``), and verl's real V1 trainer on the CPU backend inside the job's own Ray cluster.

Checked: ``scancel`` mid-run leaves nothing within 60 s; a driver killed with SIGKILL fails the job within a
bound (no hang), and the same command resumes from the last checkpoint, trains only the remaining step,
completes with a checkpoint and leaves no process of the job behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fspo_verl.analysis.run_log import read_run

pytest.register_assert_rewrite("cluster.slurm_cluster")  # it is also the plugin below
from cluster.ray_cluster import free_ports
from cluster.slurm_cluster import SlurmCluster, job_processes

pytest_plugins = ["cluster.slurm_cluster"]  # the slurm_cluster fixture
pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

SBATCH = Path(__file__).resolve().parents[2] / "recipes" / "slurm.sbatch"
#: a lean CPU run: tiny model (configs/model/tiny_cpu.yaml), 16 prompts x 4 samples a step, a checkpoint
#: every step, no validation
LEAN = [
    "data=synthetic_cpu",  # the cheapest task (4-token answers): these tests are about the launcher
    "cluster=cpu",
    "trainer.total_training_steps=2",
    "trainer.save_freq=1",
    "trainer.test_freq=-1",
    "trainer.val_before_train=false",
    "trainer.logger=[console,file]",
    "data.train_batch_size=16",
    "actor_rollout_ref.actor.ppo_mini_batch_size=16",
    "actor_rollout_ref.rollout.n=4",
]
#: where the CPU backend's driver writes metrics (prepare_run: outputs/<project>/<experiment>/, in the job's cwd)
METRICS_DIR = Path("outputs/fspo_verl_cpu_demo/fspo")
#: a 2-step job on 2 shared cores: Ray start (~15 s) + driver checks + trainer start (~60 s) + steps
JOB_TIMEOUT_S = 480
#: our bound for "no hang": the script gives Ray RAY_STOP_SECONDS (20) after SIGTERM, then SIGKILLs it
FAILED_WITHIN_S = 90
CANCELLED_WITHIN_S = 60


@pytest.fixture(scope="module")
def cache_dir(built_demo_cache) -> Path:
    """The tiny model and data: the session's demo assets (tests/conftest.py), built before the first job."""
    return built_demo_cache


class Job:
    """One submission of ``recipes/slurm.sbatch`` from ``run_dir``, with its own Ray ports and temp dir."""

    def __init__(self, cluster: SlurmCluster, run_dir: Path, cache_dir: Path, extra: list[str]):
        self.cluster, self.run_dir = cluster, run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        # short: Ray's socket paths live under it (108-byte AF_UNIX limit)
        self.ray_tmpdir = tempfile.mkdtemp(prefix="rs", dir="/tmp")
        gcs, dashboard, agent, client = free_ports(4)
        self.env = {
            **os.environ,  # PYTHONPATH (a checkout not installed in VENV) goes with the job: sbatch --export=ALL
            "GPUS_PER_NODE": "0",
            "VENV": sys.prefix,  # the venv running these tests: CI's .venv, or a shared one
            "FSPO_VERL_CACHE": str(cache_dir),
            "RAY_TMPDIR": self.ray_tmpdir,
            "RAY_HEAD_IP": "127.0.0.1",
            "RAY_DASHBOARD_HOST": "127.0.0.1",
            "RAY_PORT": str(gcs),
            "RAY_DASHBOARD_PORT": str(dashboard),
            # the defaults (52365, 10001) would collide with any other Ray on this host; small object store
            "RAY_START_ARGS": f"--dashboard-agent-listen-port={agent} --ray-client-server-port={client} "
                              "--object-store-memory=300000000 --disable-usage-stats",
            "RAY_AUTH_MODE": "disabled",  # loopback only; Ray 2.60 turns token auth on for `ray start`
        }
        self.args = [*LEAN, f"trainer.default_local_dir={run_dir / 'ckpt'}", *extra]
        self.id = ""
        self.log = run_dir / "job.log"

    def submit(self) -> str:
        self.id = self.cluster.sbatch("--nodes=1", f"--output={self.log}", str(SBATCH), *self.args,
                                      env=self.env, cwd=self.run_dir)
        return self.id

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no job log yet)"

    def wait_for(self, what: str, predicate, timeout: float = JOB_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if not self.cluster.queued(self.id):
                pytest.fail(f"job {self.id} ended before {what}:\n{self.output()[-6000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:g}s:\n{self.output()[-6000:]}")
            time.sleep(0.5)

    def processes(self) -> dict[int, str]:
        return job_processes(self.id, self.ray_tmpdir)

    def wait_no_processes(self, timeout: float) -> float:
        """Seconds until no process of the job is left on this host; fails listing them after ``timeout``."""
        start = time.monotonic()
        while (left := self.processes()) and time.monotonic() - start < timeout:
            time.sleep(0.5)
        assert not left, f"processes of job {self.id} left {timeout:g}s after it ended:\n" + "\n".join(
            f"{pid}: {cmd[:200]}" for pid, cmd in left.items())
        return time.monotonic() - start

    def state(self) -> str:
        return self.cluster.job_state(self.id)

    def metrics(self, run: int) -> dict[int, dict[str, float]]:
        path = self.run_dir / METRICS_DIR / f"metrics_{run}.jsonl"
        assert path.exists(), f"{path} missing; job log:\n{self.output()[-4000:]}"
        return read_run(path)

    def logged_steps(self, run: int) -> set[int]:
        """The steps with a whole line in ``metrics_<run>.jsonl`` so far (the job may be writing its last line)."""
        path = self.run_dir / METRICS_DIR / f"metrics_{run}.jsonl"
        whole = path.read_text().split("\n")[:-1] if path.exists() else []
        return {json.loads(line)["step"] for line in whole if line.strip()}

    def last_checkpoint(self) -> int:
        marker = self.run_dir / "ckpt" / "latest_checkpointed_iteration.txt"
        return int(marker.read_text().strip()) if marker.exists() else 0

    def cleanup(self) -> None:
        """Whatever a failed test left: cancel the job, then end its processes (ours, found by job id)."""
        if self.id and self.cluster.queued(self.id):
            self.cluster.run("scancel", self.id)
            try:
                self.cluster.wait_gone(self.id, 60)
            except TimeoutError:
                pass
        for pid in self.processes() if self.id else {}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.ray_tmpdir, ignore_errors=True)


@pytest.fixture
def make_job(slurm_cluster, cache_dir, tmp_path):
    jobs: list[Job] = []

    def make(extra: list[str] | None = None, run_dir: Path | None = None) -> Job:
        job = Job(slurm_cluster, run_dir or tmp_path / "run", cache_dir, extra or [])
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        job.cleanup()


def _driver_pid(job: Job) -> int | None:
    """The `fspo-verl train` process of the job (the script execs it in the batch step)."""
    for pid, cmd in job.processes().items():
        words = cmd.split()
        if len(words) > 2 and words[1].endswith("/fspo-verl") and words[2] == "train":
            return pid
    return None


@pytest.mark.timeout(JOB_TIMEOUT_S + 120)
def test_scancel_mid_run_leaves_nothing_behind_within_60s(make_job):
    job = make_job()
    job.submit()
    # mid-run: the trainer's Ray actors (processes named ray::...) are up
    job.wait_for("Ray actors of the trainer", lambda: any(c.startswith("ray::") for c in job.processes().values()))
    cancelled = time.monotonic()
    out = job.cluster.run("scancel", job.id)
    assert out.returncode == 0, out.stderr
    job.cluster.wait_gone(job.id, CANCELLED_WITHIN_S)
    job.wait_no_processes(timeout=max(0.0, CANCELLED_WITHIN_S - (time.monotonic() - cancelled)))
    took = time.monotonic() - cancelled
    assert took <= CANCELLED_WITHIN_S
    print(f"scancel: job gone and no process of it left after {took:.1f}s")


@pytest.mark.timeout(2 * JOB_TIMEOUT_S + 180)
def test_a_driver_killed_with_sigkill_fails_the_job_and_the_same_command_resumes(make_job, tmp_path):
    run_dir = tmp_path / "run"
    job = make_job(run_dir=run_dir)
    job.submit()
    # verl's trainer saves a step's checkpoint before it logs the step's metrics: wait for both, so the kill
    # lands after step 1 is whole and before step 2 is
    job.wait_for("checkpoint and metrics of step 1", lambda: job.last_checkpoint() >= 1 and 1 in job.logged_steps(0))
    driver = _driver_pid(job)
    assert driver is not None, job.processes()
    killed = time.monotonic()
    os.kill(driver, signal.SIGKILL)
    try:
        job.cluster.wait_gone(job.id, FAILED_WITHIN_S)
    except TimeoutError:
        pytest.fail(f"job {job.id} still running {FAILED_WITHIN_S}s after its driver was killed:\n{job.output()[-4000:]}")
    failed_after = time.monotonic() - killed
    assert job.state() == "FAILED", (job.state(), job.output()[-4000:])
    job.wait_no_processes(timeout=10)
    done = job.last_checkpoint()
    assert done == 1, f"the driver was killed after step {done}; the test needs it killed mid-run"

    assert 1 in job.metrics(0)

    # The same command, from the same directory: a whole run of the script that completes, checkpoints and
    # leaves nothing (the checks a separate 2-step job made before, here on the resumed job to save a job's
    # start-up in CI).
    again = make_job(run_dir=run_dir)
    again.submit()
    again.cluster.wait_gone(again.id, JOB_TIMEOUT_S)
    assert again.state() == "COMPLETED", again.output()[-6000:]
    output = again.output()
    assert re.search(r"Ray per node: --num-gpus=2 --num-cpus=6", output), output[-3000:]  # logical, from the config
    assert "1 nodes, 2 GPUs up" in output
    assert sorted(again.metrics(1)) == [2], output[-3000:]  # only the remaining step
    assert (again.run_dir / "ckpt" / "global_step_2" / "actor").is_dir()
    assert again.last_checkpoint() == 2
    again.wait_no_processes(timeout=10)
    # the job's Ray session ran under its own temp dir (what the process check above looks for)
    assert list(Path(again.ray_tmpdir).glob("session_*/logs/raylet.out"))
    print(f"job failed {failed_after:.1f}s after its driver was SIGKILLed; the resubmission ran "
          f"{again.cluster.run('scontrol', 'show', 'job', again.id).stdout.split('RunTime=')[1].split()[0]}")
