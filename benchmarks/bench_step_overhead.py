"""Plugin overhead inside a real training step (CPU end-to-end run of verl's V1 trainer).

Runs the CPU demo twice through ``fspo-verl train`` for a few steps, with verl's file logger on:

1. ``algorithm=fspo`` (train on all n responses per prompt);
2. the same plus ``downsampling=pods`` keeping m of n (max-variance), with the mini-batch rescaled by the
   rule ``prompts_per_update * m / n`` so both runs do the same number of optimizer steps per training step,
   and the same per-GPU micro-batch in both runs (the PODS run's per-rank mini-batch).

From verl's own ``timing_s/*`` metrics it reports, as medians over the steps after the first (warm-up):
the share of the step spent computing advantages (``timing_s/adv``) and selecting the kept responses
(``pods/select_ms``), and the update-actor time with and without PODS against the ideal ratio m/n. The
update's fixed costs (optimizer step, FSDP collectives, Python overhead) do not shrink with the batch, so
the measured ratio sits above m/n on a tiny model; on a real model the per-sample work dominates.

    .venv/bin/python benchmarks/bench_step_overhead.py [--steps 6] [--keep 2] [--out DIR]

Takes about 3-4 minutes on 2 cores (two trainer start-ups of ~45 s each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fspo_verl.analysis.run_log import read_run
from fspo_verl.cli.run_dir import latest_metrics

N_PER_PROMPT = 8  # the CPU demo's rollout.n (configs/data_extras/synthetic_cpu.yaml)
PROMPTS_PER_UPDATE = 16  # the CPU demo's ppo_mini_batch_size


def run(name: str, extra: list[str], steps: int, out: Path) -> list[dict[str, float]]:
    """One ``fspo-verl train`` run; returns the per-step metric dicts from verl's JSONL file logger."""
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [
        f"hydra.run.dir={run_dir / 'run'}",  # fspo-verl train points verl's file logger at <run dir>/metrics_<n>.jsonl
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
        *extra,
    ]
    env = dict(os.environ)
    print(f"[{name}] fspo-verl train {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "fspo_verl.cli", "train", *args], cwd=run_dir, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"[{name}] training failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    steps_data = read_run(latest_metrics(run_dir / "run"))
    return [steps_data[s] for s in sorted(steps_data) if "timing_s/step" in steps_data[s]]


def median(records: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in records[1:] if key in r]  # drop the first step: warm-up
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--keep", type=int, default=2, help=f"m kept of n={N_PER_PROMPT}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fspo_bench_step_"))
    mini = PROMPTS_PER_UPDATE * args.keep // N_PER_PROMPT
    # the same micro-batch in both runs, sized to the PODS run's per-rank mini-batch (2 FSDP ranks)
    micro = f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={mini * N_PER_PROMPT // 2}"

    full = run("fspo", ["algorithm=fspo", micro], args.steps, out)
    pods = run(
        "fspo_pods",
        [
            "algorithm=fspo",
            "downsampling=pods",
            f"trainer.v1.sampler.sampler_kwargs.keep={args.keep}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
            micro,
        ],
        args.steps,
        out,
    )

    ideal = args.keep / N_PER_PROMPT
    rows = []
    for name, records in (("fspo (all n)", full), (f"fspo + pods (keep {args.keep}/{N_PER_PROMPT})", pods)):
        step = median(records, "timing_s/step")
        select_s = median(records, "pods/select_ms") / 1000 if "pods/select_ms" in records[-1] else 0.0
        rows.append((name, step, median(records, "timing_s/adv"), select_s, median(records, "timing_s/old_log_prob"),
                     median(records, "timing_s/update_actor")))
    print(f"\nmedians over steps 2..{args.steps} (s); CPU demo, 64 prompts x {N_PER_PROMPT} responses per step\n")
    print(f"{'run':<28}{'step':>8}{'adv':>9}{'adv/step':>10}{'select':>9}{'select/step':>13}{'old_logp':>10}{'update':>9}")
    for name, step, adv, sel, old, upd in rows:
        print(f"{name:<28}{step:>8.2f}{adv:>9.4f}{adv / step:>10.2%}{sel:>9.4f}{sel / step:>13.2%}{old:>10.2f}{upd:>9.2f}")
    update_ratio = rows[1][5] / rows[0][5]
    old_ratio = rows[1][4] / rows[0][4]
    print(f"\nupdate_actor with/without PODS: {update_ratio:.2f} (ideal m/n = {ideal:.2f})")
    print(f"old_log_prob with/without PODS: {old_ratio:.2f} (ideal m/n = {ideal:.2f})")
    print(f"runs and JSONL logs: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
