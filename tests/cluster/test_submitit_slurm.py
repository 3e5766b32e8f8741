"""``fspo-verl train -m hydra/launcher=submitit_slurm`` against a real (private, one-host) SLURM cluster:
the job is submitted with sbatch by Hydra's submitit launcher, trains one step of verl's V1 trainer on the
CPU backend inside SLURM, and its outcome comes back to the sweep (jobs.json) with its files in the job's
directory.

The cluster is the ``slurm_cluster`` fixture of ``tests/cluster/slurm_cluster.py`` (branch ``slurm``). Until
that module is present this test skips, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.cpu_run import LEAN_JOB

from fspo_verl.analysis.run_log import read_run

try:
    from cluster.slurm_cluster import SlurmCluster  # noqa: F401 - the fixture's module
except ImportError:
    HAVE_FIXTURE = False
else:
    HAVE_FIXTURE = True

pytest_plugins = ["cluster.slurm_cluster"] if HAVE_FIXTURE else []  # the slurm_cluster fixture
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not HAVE_FIXTURE, reason="tests/cluster/slurm_cluster.py (the SLURM fixture) is not here yet"),
]

LEAN = [*LEAN_JOB, "trainer.total_training_steps=1", "trainer.save_freq=-1"]


def test_a_sweep_job_runs_under_slurm_and_reports_back(slurm_cluster, tmp_path, built_demo_cache):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    env = slurm_cluster.env({**os.environ, "FSPO_VERL_CACHE": str(built_demo_cache)})
    args = [
        "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=12",
        "algorithm=fspo", *LEAN, f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run([sys.executable, "-m", "fspo_verl.cli", "train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=840)
    output = proc.stdout + proc.stderr
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sweep.glob(".submitit/*/*.err"))
    assert proc.returncode == 0, output[-4000:] + logs + slurm_cluster.logs()
    jobs = json.loads((sweep / "jobs.json").read_text())
    assert [j["status"] for j in jobs] == ["ok"], jobs
    assert list(sweep.glob(".submitit/*/*_submission.sh"))  # submitted through sbatch, not run here
    assert sorted(read_run(Path(jobs[0]["metrics"]))) == [1]
