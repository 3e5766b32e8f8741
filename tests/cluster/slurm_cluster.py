"""A real one-host SLURM cluster for tests: munged, slurmctld and slurmd of Debian's slurm-wlm (22.05).

Everything is private to one cluster: its own directory (``slurm.conf``, state, spool, logs, pid files),
its own munged on its own socket (``AuthInfo=socket=...``, started as the ``munge`` user with the machine's
``/etc/munge/munge.key``), its own free ports and a random first job id, so it touches no system daemon and
parallel clusters on one machine do not collide. Clients find it through ``SLURM_CONF`` (:meth:`env`).
The daemons are stopped by the PIDs in their pid files. Needs root (slurmd runs jobs as their user).

Also usable by hand::

    python tests/cluster/slurm_cluster.py      # prints SLURM_CONF=..., stops on Enter
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

if not __package__:  # run as a script (python tests/cluster/slurm_cluster.py): make `cluster` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cluster.ray_cluster import free_ports

#: the commands a cluster needs (Debian: slurmctld slurmd slurm-client munge)
REQUIRED = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "slurmctld", "slurmd", "munged")
START_TIMEOUT_S = 60
#: the node's memory as told to SLURM; not enforced (CR_Core: cores only), just plausible
REAL_MEMORY_MB = 16000

SLURM_CONF = """\
ClusterName={name}
SlurmctldHost={host}(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmdSpoolDir={dir}/spool
StateSaveLocation={dir}/state
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
FirstJobId={first_job_id}
KillWait=10
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def missing_commands() -> list[str]:
    return [cmd for cmd in REQUIRED if shutil.which(cmd) is None]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(pid, 0)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class SlurmCluster:
    dir: Path
    host: str

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with ``SLURM_CONF`` pointing at this cluster."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster (text output captured)."""
        kwargs.setdefault("timeout", 60)
        return subprocess.run(list(cmd), check=False, capture_output=True, text=True, env=kwargs.pop("env", self.env()), **kwargs)

    def logs(self) -> str:
        logs = sorted([*(self.dir / "log").glob("*.log"), *(self.dir / "munge").glob("*.log")])
        parts = [f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in logs]
        return "\n".join(parts)

    def pid_files(self) -> list[Path]:
        return [self.dir / "slurmd.pid", self.dir / "slurmctld.pid", self.dir / "munge" / "munged.pid"]

    def queued(self, job_id: str) -> bool:
        """Whether ``job_id`` is still in the queue (pending, running or completing)."""
        out = self.run("squeue", "--noheader", "--jobs", job_id, "--format=%T")
        return out.returncode == 0 and out.stdout.strip() != ""

    def job_state(self, job_id: str) -> str:
        """``JobState`` of a job slurmctld still knows (MinJobAge keeps finished jobs for a while), else ''."""
        out = self.run("scontrol", "show", "job", job_id)
        for word in out.stdout.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return ""

    def sbatch(self, *args: str, env: dict[str, str], cwd: Path) -> str:
        """Submit with ``sbatch --parsable ARGS`` from ``cwd``; returns the job id."""
        out = self.run("sbatch", "--parsable", *args, env=self.env(env), cwd=cwd)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def wait_gone(self, job_id: str, timeout: float) -> float:
        """Wait until ``job_id`` has left the queue; returns the seconds waited. TimeoutError after ``timeout``."""
        start = time.monotonic()
        while self.queued(job_id):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"job {job_id} still queued after {timeout:g}s")
            time.sleep(1)
        return time.monotonic() - start

    def stop(self) -> None:
        """SIGTERM each daemon by its pid file (slurmd, slurmctld, munged), SIGKILL after 20 s."""
        for pid_file in self.pid_files():
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def job_processes(job_id: str, marker: str | None = None) -> dict[int, str]:
    """Live processes of a SLURM job on this host: pid -> command line. A process belongs to the job when its
    environment holds ``SLURM_JOB_ID=<job_id>`` (every process a step starts, Ray's raylet and workers
    included) or, with ``marker`` (the job's Ray temp dir), when its command line contains it."""
    found: dict[int, str] = {}
    needle = f"SLURM_JOB_ID={job_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or a kernel thread
        if cmdline and _pid_alive(int(proc.name)) and (needle in environ or (marker and marker in cmdline)):
            found[int(proc.name)] = cmdline
    return found


def _start(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run a daemon that forks into the background; RuntimeError with its output if it fails."""
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stdout + out.stderr).strip()}")


def start_cluster(cpus: int | None = None) -> SlurmCluster:
    """Start munged, slurmctld and slurmd for a new private cluster; return once its node is idle."""
    missing = missing_commands()
    if missing:
        raise RuntimeError(f"SLURM is not installed (missing {' '.join(missing)}): apt-get install slurmctld slurmd slurm-client munge")
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    # short and world-traversable: munged (user munge) must reach its socket in here
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    root.chmod(0o755)
    for sub in ("spool", "state", "log", "munge"):
        (root / sub).mkdir()
    shutil.chown(root / "munge", "munge", "munge")
    cluster = SlurmCluster(root, host)
    ctld_port, slurmd_port = free_ports(2)
    cluster.conf.write_text(SLURM_CONF.format(
        name=f"t{root.name[-6:].lower()}", host=host, dir=root, ctld_port=ctld_port, slurmd_port=slurmd_port,
        first_job_id=random.randint(10_000, 9_000_000), cpus=cpus or os.cpu_count() or 1, memory=REAL_MEMORY_MB,
    ))
    munge = root / "munge"
    try:
        _start(
            ["runuser", "-u", "munge", "--", "munged", "--force", f"--socket={munge}/munge.sock",
             f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
        )
        _start(["slurmctld", "-f", str(cluster.conf)], cluster.env())
        _start(["slurmd", "-f", str(cluster.conf)], cluster.env())
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            state = cluster.run("sinfo", "--noheader", "--format=%T").stdout.strip()
            if state == "idle":
                return cluster
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node is {state or 'not listed'} after {START_TIMEOUT_S}s\n{cluster.logs()}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------------------
# pytest: `pytest_plugins = ["cluster.slurm_cluster"]` in a test module provides these fixtures.


def _unavailable() -> str | None:
    missing = missing_commands()
    if missing:
        return f"SLURM is not installed (no {' '.join(missing)}); apt-get install slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0:
        return "a private SLURM cluster needs root (slurmd runs jobs as their user; munged is started as munge)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """A private one-host SLURM cluster for the whole session. Without SLURM (or root) the tests skip
    locally and FAIL under CI=true, where .ci/run installs it: CI must run them, not skip them."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


if __name__ == "__main__":
    cluster = start_cluster()
    print(f"export SLURM_CONF={cluster.conf}")
    try:
        input("SLURM is up; press Enter to stop it\n")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)
