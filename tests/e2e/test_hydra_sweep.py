"""``fspo-verl train -m`` for real: sweeps of verl's V1 trainer on the CPU backend, one step per job.

- basic launcher: two jobs (fspo, gspo) one after the other in this driver, each in a fresh Ray session;
  each job's directory holds its resolved config, metrics, TensorBoard events, plots and checkpoint, and
  ``fspo-verl plot <sweep dir>`` compares them;
- submitit_local: two jobs as submitit subprocesses, the second with a model whose weights file has a header
  of the right length and offsets but a dtype the safetensors library does not know (the driver reads the
  header's length and offsets, not its dtypes), so it passes the driver checks and fails inside the trainer:
  it is recorded, the first keeps its results.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _bad_inputs import unknown_dtype

from e2e.cpu_run import LEAN_JOB, fspo_verl_train
from fspo_verl.analysis.run_log import read_run
from fspo_verl.demo import ensure_assets

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

#: a lean CPU job: 16 prompts x 4 samples, one step, no validation
LEAN = [*LEAN_JOB, "trainer.total_training_steps=1"]


@pytest.fixture(scope="module")
def cache_dir(built_demo_cache) -> Path:
    return built_demo_cache  # the session's demo assets (tests/conftest.py)


def test_two_job_sweep_basic_launcher(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    proc = fspo_verl_train(["-m", "algorithm=fspo,gspo", *LEAN, "trainer.save_freq=1", f"hydra.sweep.dir={sweep}"],
                           tmp_path, cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "the 2 job(s) of the sweep pass the driver checks" in output
    jobs = json.loads((sweep / "jobs.json").read_text())
    assert [(j["job"], j["overrides"][0], j["status"]) for j in jobs] == [(0, "algorithm=fspo", "ok"), (1, "algorithm=gspo", "ok")]
    # a fresh Ray session per job: each job starts its own local Ray instance
    assert output.count("Started a local Ray instance") == 2, output[-3000:]
    for num, loss in ((0, "fspo"), (1, "gspo")):
        job = sweep / str(num)
        config = yaml.safe_load((job / "config_0.yaml").read_text())
        assert config["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == loss
        assert config["trainer"]["default_local_dir"] == str((job / "checkpoints").resolve())
        assert sorted(read_run(job / "metrics_0.jsonl")) == [1]
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert (job / "checkpoints" / "global_step_1" / "actor").is_dir()
        assert (job / "plots_0" / "reward.png").is_file()
        assert json.loads((job / "status_0.json").read_text())["status"] == "ok"
        assert (job / ".hydra" / "overrides.yaml").is_file()
    assert "fspo-verl train: run 0 ok" in output and f"checkpoints  {(sweep / '1' / 'checkpoints').resolve()}" in output

    plotted = subprocess.run([sys.executable, "-m", "fspo_verl.cli", "plot", str(sweep)], capture_output=True, text=True)
    assert plotted.returncode == 0, plotted.stderr
    assert (sweep / "comparison" / "critic_score_mean.png").is_file()


def test_submitit_local_records_a_failed_job_and_keeps_the_other(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    good = Path(ensure_assets(cache_dir)["model_path"])
    bad = tmp_path / "corrupt_weights_model"
    shutil.copytree(good, bad)
    unknown_dtype(bad / "model.safetensors")
    sweep = tmp_path / "sweep"
    proc = fspo_verl_train(
        # one job at a time (batches of one): two CPU Ray clusters at once would overload a small CI machine
        ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15", "hydra.sweeper.max_batch_size=1",
         f"actor_rollout_ref.model.path={good},{bad}",
         *LEAN, "trainer.save_freq=-1", f"hydra.sweep.dir={sweep}"],
        tmp_path, cache_dir,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-6000:]  # one job failed
    jobs = json.loads((sweep / "jobs.json").read_text())
    assert [j["status"] for j in jobs] == ["ok", "failed"], jobs
    assert (sweep / ".submitit").is_dir()  # launched by submitit, not in this process
    assert sorted(read_run(sweep / "0" / "metrics_0.jsonl")) == [1]
    failed = json.loads((sweep / "1" / "status_0.json").read_text())
    assert failed["status"] == "failed" and failed["error"]
