"""Time PODS max-variance selection at the paper's scale: B=16,384 prompts, n=64, m=16 (1,048,576 rollouts).

Compares ``fspo_verl.downsampling.select_max_variance`` (one sort + prefix sums, all prompts at once) with
``max_variance_per_group_loop`` (a Python loop over groups and k, like the PODS reference trainer). The loop
is timed on a slice of the prompts and scaled linearly (it is O(B)); pass ``--loop-prompts 16384`` to time
it in full. Also checks that both choose subsets of equal variance.

    .venv/bin/python benchmarks/bench_downsampling.py [--prompts 16384] [--n 64] [--m 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from fspo_verl.downsampling.rules import DOWNSAMPLERS, select_max_variance

# the loop reference lives with the tests, which check the package against it
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_impls import max_variance_per_group_loop


def _best_of(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16384)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--loop-prompts", type=int, default=1024, help="prompts timed for the loop, then scaled")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (args.prompts, args.n), generator=g).float()  # (B, n) binary, as in math RL
    rewards += 0.1 * torch.rand(args.prompts, args.n, generator=g)  # (B, n) plus a format-score spread

    select_max_variance(rewards[:64], args.m)  # warm-up
    best, median = _best_of(lambda: select_max_variance(rewards, args.m), args.repeats)

    subset = rewards[: args.loop_prompts]  # (b, n)
    start = time.perf_counter()
    loop_idx = max_variance_per_group_loop(subset, args.m)
    loop_s = (time.perf_counter() - start) * args.prompts / args.loop_prompts

    def var(idx: torch.Tensor) -> torch.Tensor:
        return subset.double().gather(1, idx).var(dim=1, unbiased=False)  # (b,)

    max_gap = float((var(select_max_variance(subset, args.m)) - var(loop_idx)).abs().max())

    others = {}
    lengths = torch.randint(1, 4096, rewards.shape, generator=g)  # (B, n)
    valid = torch.ones_like(rewards, dtype=torch.bool)  # (B, n)
    for name, rule in DOWNSAMPLERS.items():
        others[name] = round(
            _best_of(lambda rule=rule: rule(rewards, lengths, valid, args.m, torch.Generator().manual_seed(0)), 3)[0], 4
        )

    report = {
        "prompts": args.prompts,
        "n": args.n,
        "m": args.m,
        "rollouts": args.prompts * args.n,
        "threads": args.threads,
        "vectorised_s_best": round(best, 4),
        "vectorised_s_median": round(median, 4),
        "loop_s_estimated": round(loop_s, 3),
        "loop_prompts_timed": args.loop_prompts,
        "speedup_vs_loop": round(loop_s / best, 1),
        "max_variance_gap_vs_loop": max_gap,
        "every_rule_s_best": others,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
