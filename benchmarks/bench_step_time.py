"""Step time and generation time of the CPU demo against the generation floor, measured in the same run.

Runs the CPU demo for a few steps through ``fspo-verl train`` (verl's real V1 trainer; validation and
checkpoints off), with verl's JSONL file logger and the ``hf`` rollout server's batch recorder
(``FSPO_VERL_HF_TIMING_DIR``, see :mod:`fspo_verl.rollout_hf.server`) on. Per training step it reports

- ``step``: verl's ``timing_s/step``;
- ``gen``: verl's ``timing_s/gen``, from asking the replay buffer for a batch until it has one (dispatch,
  agent loop, generation, reward, TransferQueue writes, the buffer's wait);
- ``busy``: the servers' own time in batched ``generate_batch`` calls during that step (the busier replica);
- ``floor``: the same requests replayed after the run in this process, each replica's requests of the step
  as ONE ``generate_batch`` call (one thread, as the server runs; EOS disabled and ``max_tokens`` set to
  the recorded response lengths, so exactly the same tokens are decoded whatever the weights), the slower
  replica's time. Replicas run in parallel in a real run, hence the max. This is what generation would
  cost with perfect batching and zero orchestration overhead.

Medians are over the steps after the first (warm-up). The model is the run's own
(``actor_rollout_ref.model.path`` of the composed config), so any override, e.g. another data/model preset,
is measured the same way::

    HEAVY_EXCLUSIVE=1 heavy timeout 900 .venv/bin/python benchmarks/bench_step_time.py [--steps 8] [--out DIR] \\
        [-- algorithm=fspo data=synthetic_cpu ...]   (default: algorithm=fspo on the demo task)

Exit status 0 on a completed run (targets are reported, not enforced: timings belong in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from fspo_verl.analysis.run_log import read_run
from fspo_verl.cli.run_dir import latest_metrics
from fspo_verl.rollout_hf.generation import SamplingSpec, generate_batch
from fspo_verl.rollout_hf.server import TIMING_DIR_ENV

#: the demo's step targets (our choice): median demo step <= 3 s, generation <= 2x the floor
TARGET_STEP_S = 3.0
TARGET_GEN_OVER_FLOOR = 2.0

DEFAULT_OVERRIDES = ["algorithm=fspo"]  # the default demo: countdown


def console_lines_per_step(console: str) -> float:
    """Console lines from verl's first step-metrics line (``step:1 - ...``) to its last, per step after the first
    (the start-up output, e.g. verl's one-time config dump, is not counted)."""
    lines = console.splitlines()
    marks = [i for i, line in enumerate(lines) if re.search(r"\bstep:\d+ - ", line)]
    return (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else float("nan")


def train(overrides: list[str], steps: int, out: Path) -> tuple[list[dict[str, float]], Path, float, str]:
    """One ``fspo-verl train`` run; returns (per-step metrics, server timing dir, wall seconds, console text)."""
    out.mkdir(parents=True, exist_ok=True)
    run_dir, timing_dir = out / "run", out / "server_batches"
    args = [
        *overrides,
        f"hydra.run.dir={run_dir}",  # fspo-verl train points verl's file logger at <run dir>/metrics_<n>.jsonl
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]
    env = {**os.environ, TIMING_DIR_ENV: str(timing_dir)}
    print(f"fspo-verl train {' '.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fspo_verl.cli", "train", *args], cwd=out, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # one stream, in order
    wall = time.perf_counter() - start
    console = proc.stdout
    (out / "console.log").write_text(console)
    if proc.returncode != 0:
        sys.exit(f"training failed (exit {proc.returncode}); console in {out / 'console.log'}:\n{console[-4000:]}")
    data = read_run(latest_metrics(run_dir))
    records = [data[s] for s in sorted(data) if "timing_s/step" in data[s]]
    return records, timing_dir, wall, console


def load_batches(timing_dir: Path) -> dict[int, dict[int, list[dict]]]:
    """weight version -> replica -> the training batches that replica decoded with those weights."""
    by_version: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(timing_dir.glob("replica*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["spec"][0] > 0:  # sampled (training) requests; greedy ones are validation
                by_version[record["global_steps"]][record["replica"]].append(record)
    return by_version


def model_path(overrides: list[str]) -> str:
    from fspo_verl.cli.validate import compose

    return str(compose(overrides).actor_rollout_ref.model.path)


def replay_seconds(model: torch.nn.Module, batches: list[dict], repeats: int = 3) -> float:
    """Best-of-``repeats`` wall seconds of one ``generate_batch`` over every request of ``batches``."""
    spec = SamplingSpec(*batches[0]["spec"])
    prompts = [p for b in batches for p in b["prompts"]]
    lengths = [n for b in batches for n in b["response_lens"]]
    never = {-1}  # no token id is -1: each row decodes exactly its recorded length
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        generate_batch(model, prompts, lengths, spec, never, pad_token_id=0, generator=torch.Generator().manual_seed(0))
        best = min(best, time.perf_counter() - start)
    return best


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("overrides", nargs="*", help=f"fspo-verl train overrides (default: {' '.join(DEFAULT_OVERRIDES)})")
    args = parser.parse_args(argv)
    overrides = args.overrides or DEFAULT_OVERRIDES
    out = args.out or Path(tempfile.mkdtemp(prefix="fspo_bench_step_time_"))

    records, timing_dir, wall, console = train(overrides, args.steps, out.resolve())
    by_version = load_batches(timing_dir)
    versions = sorted(by_version)
    if len(versions) != len(records):
        sys.exit(f"{len(records)} steps logged but server batches under {len(versions)} weight versions {versions}")

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # as the hf server runs
    model = AutoModelForCausalLM.from_pretrained(model_path(overrides), dtype=torch.float32, attn_implementation="sdpa")
    model.eval()

    rows = []
    for record, version in zip(records, versions):
        replicas = by_version[version]
        rows.append({
            "step": record["timing_s/step"],
            "gen": record["timing_s/gen"],
            "busy": max(sum(b["seconds"] for b in batches) for batches in replicas.values()),
            "floor": max(replay_seconds(model, batches) for batches in replicas.values()),
            "batches": sum(len(batches) for batches in replicas.values()),
            "requests": sum(len(b["prompts"]) for batches in replicas.values() for b in batches),
        })
    print(f"\n{'step':>4}{'step_s':>9}{'gen_s':>8}{'busy_s':>8}{'floor_s':>9}{'gen/floor':>11}{'batches':>9}{'requests':>10}")
    for i, row in enumerate(rows, 1):
        print(f"{i:>4}{row['step']:>9.2f}{row['gen']:>8.2f}{row['busy']:>8.3f}{row['floor']:>9.3f}"
              f"{row['gen'] / row['floor']:>11.1f}{row['batches']:>9}{row['requests']:>10}")
    summary = {
        "overrides": overrides,
        "steps": len(rows),
        "median_step_s": median_after_warmup([r["step"] for r in rows]),
        "median_gen_s": median_after_warmup([r["gen"] for r in rows]),
        "median_busy_s": median_after_warmup([r["busy"] for r in rows]),
        "median_floor_s": median_after_warmup([r["floor"] for r in rows]),
        "wall_s": wall,
        "console_lines": console.count("\n"),
        "console_lines_per_step": console_lines_per_step(console),
        "rows": rows,
    }
    gen_ratio = summary["median_gen_s"] / summary["median_floor_s"]
    print(f"\nmedians over steps 2..{len(rows)}: step {summary['median_step_s']:.2f} s "
          f"(target <= {TARGET_STEP_S}), gen {summary['median_gen_s']:.2f} s, server busy "
          f"{summary['median_busy_s']:.3f} s, floor {summary['median_floor_s']:.3f} s, gen/floor {gen_ratio:.1f} "
          f"(target <= {TARGET_GEN_OVER_FLOOR})")
    print(f"run wall time {wall:.0f} s incl. start-up; console {summary['console_lines']} lines, "
          f"{summary['console_lines_per_step']:.1f} per step after the first; logs in {out}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
