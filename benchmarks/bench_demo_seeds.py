"""The CPU demo's reward targets over seeds, measured with ``fspo-verl train`` itself (issue 9).

For each seed S, runs ``fspo-verl train data.seed=S`` (the default demo, plus any overrides given after
``--``) with verl's JSONL file logger, times the command's wall clock, and reports from the run's
``critic/score/mean`` (the mean reward of the step's sampled responses):

- ``first5`` / ``last5``: the mean reward of the first and of the last 5 steps; target last5 >= first5 + 0.25;
- ``best5``: the best mean over any 5 consecutive steps; target (no collapse) last5 >= 0.9 * best5;
- ``step``: the median of verl's ``timing_s/step``; ``wall``: the whole command, Ray start included;
- the greedy validation score at step 0 and at the end (``val-core/fspo_countdown/acc/mean@1``).

``data.seed`` sets the prompt order and the rollout's sampling seed (``data_extras/countdown_cpu.yaml``).
The model and data come from the asset cache, so a first run also builds them (not counted separately)::

    heavy timeout 3600 .venv/bin/python benchmarks/bench_demo_seeds.py --seeds 1,2,3 --out DIR [-- overrides]
    .venv/bin/python benchmarks/bench_demo_seeds.py --summarize DIR/seed1/run/metrics_0.jsonl ...   # existing runs

Targets are reported, not enforced (figures belong in benchmarks, not tests). Exit status 0 on completed runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fspo_verl.analysis.run_log import read_run
from fspo_verl.cli.run_dir import latest_metrics

WINDOW = 5
MIN_GAIN = 0.25
NO_COLLAPSE = 0.9


def summarize(path: str | Path) -> dict:
    """The figures of one run's JSONL log (module docstring)."""
    run = read_run(path)
    steps = sorted(s for s, m in run.items() if s > 0 and "critic/score/mean" in m)
    rewards = [run[s]["critic/score/mean"] for s in steps]
    if len(rewards) < WINDOW:
        raise ValueError(f"{path}: {len(rewards)} training steps logged; need at least {WINDOW}")
    windows = [statistics.fmean(rewards[i : i + WINDOW]) for i in range(len(rewards) - WINDOW + 1)]
    first, last, best = windows[0], windows[-1], max(windows)
    val = {s: v for s, m in run.items() for k, v in m.items() if k.startswith("val-core/") and "/acc/" in k}
    step_times = [run[s]["timing_s/step"] for s in steps if "timing_s/step" in run[s]]
    return {
        "steps": len(rewards), "first5": first, "last5": last, "best5": best, "gain_ok": last >= first + MIN_GAIN,
        "no_collapse": last >= NO_COLLAPSE * best, "median_step_s": statistics.median(step_times) if step_times else None,
        "val": dict(sorted(val.items())), "rewards": rewards,
    }  # fmt: skip


def _row(name: str, s: dict, wall: float | None) -> str:
    val = " / ".join(f"{v:.2f}" for v in s["val"].values()) or "-"
    wall_text = f"{wall:.0f}s" if wall is not None else "-"
    return (
        f"| {name} | {s['first5']:.3f} | {s['last5']:.3f} ({s['last5'] - s['first5']:+.3f}) | {s['best5']:.3f} | "
        f"{s['last5'] / s['best5']:.2f} | {s['median_step_s']:.1f}s | {wall_text} | {val} |"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", default="demo_seeds")
    parser.add_argument("--summarize", nargs="+", help="only summarize these existing JSONL logs")
    args = parser.parse_args(argv)

    runs: list[tuple[str, str, float | None]] = []
    if args.summarize:
        runs = [(Path(p).parent.name, p, None) for p in args.summarize]
    else:
        launcher = Path(sys.executable).with_name("fspo-verl")
        for seed in (int(s) for s in args.seeds.split(",")):
            run_dir = Path(args.out, f"seed{seed}").resolve()
            run_dir.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            # fspo-verl train writes metrics_<n>.jsonl, plots and TensorBoard events into hydra.run.dir
            cmd = [str(launcher), "train", f"data.seed={seed}", f"hydra.run.dir={run_dir}/run",
                   f"trainer.default_local_dir={run_dir}/ckpt", *overrides]
            start = time.monotonic()
            with open(run_dir / "console.log", "w") as console:
                proc = subprocess.run(cmd, env=env, cwd=run_dir, stdout=console, stderr=subprocess.STDOUT)
            wall = time.monotonic() - start
            if proc.returncode != 0:
                print(f"seed {seed}: fspo-verl train exited {proc.returncode}; see {run_dir / 'console.log'}")
                return proc.returncode
            runs.append((f"seed {seed}", str(latest_metrics(run_dir / "run")), wall))

    print("| run | first 5 steps | last 5 steps (gain) | best 5-step window | last / best | median step | wall | greedy val, start / end |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path, wall in runs:
        print(_row(name, summarize(path), wall))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
