"""Drive the CPU demo through verl's real entry point (``python -m verl.trainer.main_ppo``) in a subprocess."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fspo_verl.analysis.run_log import read_run
from fspo_verl.cli.run_dir import reserve_run
from fspo_verl.cpu import CPU_ENVIRONMENT
from fspo_verl.demo import ensure_assets
from fspo_verl.demo.overrides import demo_overrides
from fspo_verl.rollout_hf.server import DIGEST_DIR_ENV

#: per run: startup (~45 s on 2 idle cores) + a few steps; generous because CI machines are shared
RUN_TIMEOUT_S = 420
#: ``fspo-verl train``: a run, or a sweep of a few one-step jobs
TRAIN_TIMEOUT_S = 1100

#: the cheapest real job of ``fspo-verl train`` (the 4-token next_digit task, 16 prompts x 4 answers, no validation):
#: for tests about launchers, sweeps and faults, not training; each adds its step count (and save_freq)
LEAN_JOB = [
    "data=synthetic_cpu",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "data.train_batch_size=16",
    "actor_rollout_ref.actor.ppo_mini_batch_size=16",
    "actor_rollout_ref.rollout.n=4",
]

#: what every training step logs: reward, loss, gradient, entropy
REWARD_AND_LOSS = ["critic/score/mean", "critic/rewards/mean", "actor/pg_loss", "actor/grad_norm", "actor/entropy"]
#: verl's on-policy check: the rollout server's token probabilities against the actor's
SYNC = ["training/rollout_probs_diff_max", "training/rollout_probs_diff_mean"]


def length_bin_keys(loss: str) -> list[str]:
    """The first length bin's counts (every response of the lean tasks is shorter than 256 tokens)."""
    return [f"actor/{loss}/seqs_len_0_256", f"actor/{loss}/clipped_len_0_256"]


FSPO = [
    "algorithm.adv_estimator=grpo",
    "actor_rollout_ref.actor.policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig",
    "actor_rollout_ref.actor.policy_loss.loss_mode=fspo",
]


@dataclass
class RunResult:
    returncode: int
    output: str
    metrics: dict[int, dict[str, float]]  # step -> metrics logged at that step (JSONL file logger)
    run_dir: Path


def run_cpu_demo(
    run_dir: Path,
    cache_dir: Path,
    steps: int,
    extra: list[str],
    env_extra: dict[str, str] | None = None,
    data: str = "synthetic_cpu",
) -> RunResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    assets = ensure_assets(cache_dir)
    env = {
        **os.environ,
        **CPU_ENVIRONMENT,
        **reserve_run(run_dir).logger_environment(),  # metrics_<n>.jsonl of a new run, tensorboard/
        DIGEST_DIR_ENV: str(run_dir / "server_digests"),
        **(env_extra or {}),
    }
    args = demo_overrides(assets, str(run_dir), steps, ["trainer.logger=[console,file,tensorboard]", *extra], data=data)
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *args],
        capture_output=True, text=True, env=env, cwd=run_dir, timeout=RUN_TIMEOUT_S,
    )
    log = Path(env["VERL_FILE_LOGGER_PATH"])
    metrics = read_run(log) if log.exists() else {}
    return RunResult(proc.returncode, proc.stdout + proc.stderr, metrics, run_dir)


def fspo_verl_train(args: list[str], cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    """``fspo-verl train ARGS`` (the Hydra application, as a user runs it) in ``cwd``; its output in output.log."""
    env = {**os.environ, "FSPO_VERL_CACHE": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "fspo_verl.cli", "train", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
    (cwd / "output.log").write_text(proc.stdout + proc.stderr)
    return proc


def assert_succeeded(result: RunResult) -> None:
    assert result.returncode == 0, result.output[-6000:]


def assert_finite(metrics: dict[int, dict[str, float]], keys: list[str]) -> None:
    """Every key is logged, finite, at every training step of ``metrics`` (step -> metrics, as read_run gives)."""
    for step, values in metrics.items():
        for key in keys:
            if step == 0 and not key.startswith("val"):
                continue  # step 0 holds the validation before training only
            assert key in values, f"step {step} lacks {key}; has {sorted(values)[:50]}"
            assert math.isfinite(values[key]), f"step {step}: {key}={values[key]}"
