"""``fspo-verl train -m`` for real: sweeps of verl's V1 trainer on the CPU backend, one or two steps per job.

- basic launcher: the two sequence losses' presets (sspo, fspo_adaptive), one job after the other in this driver,
  each in a fresh Ray session, two steps of four updates each; each job's directory holds its resolved config,
  metrics, TensorBoard events, plots and checkpoint, and ``fspo-verl plot <sweep dir>`` compares them. The jobs
  are also the end-to-end runs of the two losses: their reward, loss, on-policy check, length bins and fairness
  numbers reach the file logger, and fspo_adaptive's statistics, all-reduced over the two FSDP ranks, fill;
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

from e2e.cpu_run import (
    LEAN_JOB,
    REWARD_AND_LOSS,
    SYNC,
    assert_finite,
    fspo_verl_train,
    length_bin_keys,
)
from fspo_verl.analysis.run_log import read_run
from fspo_verl.demo import ensure_assets

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

#: a lean CPU job: 16 prompts x 4 samples, one step, no validation
LEAN = [*LEAN_JOB, "trainer.total_training_steps=1"]
#: two steps of four updates (mini-batches of 4 prompts x 4 answers, 8 samples per rank), three of them
#: off-policy: fspo_adaptive's statistics count only off-policy sequences, so by step 2 step 1 has filled them
TWO_STEPS_FOUR_UPDATES = [
    *(o for o in LEAN_JOB if not o.startswith("actor_rollout_ref.actor.ppo_mini_batch_size=")),
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    "trainer.total_training_steps=2",
]


@pytest.fixture(scope="module")
def cache_dir(built_demo_cache) -> Path:
    return built_demo_cache  # the session's demo assets (tests/conftest.py)


def test_two_job_sweep_basic_launcher(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    losses = ("sspo", "fspo_adaptive")
    proc = fspo_verl_train(["-m", f"algorithm={','.join(losses)}", *TWO_STEPS_FOUR_UPDATES, "trainer.save_freq=2",
                            f"hydra.sweep.dir={sweep}"], tmp_path, cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "the 2 job(s) of the sweep pass the driver checks" in output
    jobs = json.loads((sweep / "jobs.json").read_text())
    assert [(j["job"], j["overrides"][0], j["status"]) for j in jobs] == [
        (num, f"algorithm={loss}", "ok") for num, loss in enumerate(losses)]
    # a fresh Ray session per job: each job starts its own local Ray instance
    assert output.count("Started a local Ray instance") == 2, output[-3000:]
    runs = {}  # loss -> its job's metrics (step -> values)
    for num, loss in enumerate(losses):
        job = sweep / str(num)
        config = yaml.safe_load((job / "config_0.yaml").read_text())
        assert config["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == loss
        assert config["trainer"]["default_local_dir"] == str((job / "checkpoints").resolve())
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert (job / "checkpoints" / "global_step_2" / "actor").is_dir()
        assert (job / "plots_0" / "reward.png").is_file()
        assert json.loads((job / "status_0.json").read_text())["status"] == "ok"
        assert (job / ".hydra" / "overrides.yaml").is_file()

        # the loss trained: its numbers, the per-step fairness numbers (fspo_verl.diagnostics.fairness_number)
        # among them, reach verl's file logger at every step
        runs[loss] = read_run(job / "metrics_0.jsonl")
        assert sorted(runs[loss]) == [1, 2]
        fairness = [f"actor/{loss}/length_reweighting_error", f"actor/{loss}/clip_rate_sd_across_bins"]
        assert_finite(runs[loss], REWARD_AND_LOSS + SYNC + length_bin_keys(loss) + fairness)
    # two FSDP ranks over gloo all-reduce fspo_adaptive's statistics inside the loss; by step 2 the off-policy
    # updates of step 1 have filled them
    assert_finite(runs["fspo_adaptive"], ["actor/fspo_adaptive/alpha", "actor/fspo_adaptive/stat_seqs"])
    assert runs["fspo_adaptive"][2]["actor/fspo_adaptive/stat_seqs"] > 0
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
