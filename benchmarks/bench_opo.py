"""``opo_vectorized`` against verl's loop-based ``opo``, side by side, at several batch sizes.

    .venv/bin/python benchmarks/bench_opo.py                          # 1,024 / 16,384 / 131,072 responses
    .venv/bin/python benchmarks/bench_opo.py --sizes 16384 --reps 9 --threads 2

Inputs as verl's TaskRunner passes them: token_level_rewards (bs, T) float32 with the outcome reward on the
last response token, response_mask (bs, T), and index = the prompt uids as a numpy object array of uuid4
strings, ``--group`` responses per prompt, rows shuffled (verl balances batches, so groups are not
contiguous). Both estimators are looked up in verl's real ADV_ESTIMATOR_REGISTRY and called with the same
keywords. Before timing, the script checks the two outputs agree (max |diff| printed; the target is 1e-6).

Time: median (and min) over ``--reps`` after ``--warmup`` untimed calls; the two estimators alternate
within each repetition; ``torch.set_num_threads(--threads)``. The machine is shared: the median is the
headline, the min shows the cost without interference (the vectorised estimator is a few memory-bound
(bs, T) passes, which suffer most when another process takes a core mid-op).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import numpy as np
import torch

import verl  # noqa: F401  (loads the fspo_verl plugin: registers opo_vectorized)
from verl.trainer.ppo.core_algos import get_adv_estimator_fn


def make_inputs(size: int, group: int, width: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    prompts = [str(uuid.UUID(int=int(x))) for x in torch.randint(0, 2**62, (size // group + 1,), generator=g)]
    perm = torch.randperm(size, generator=g).numpy()
    index = np.array([prompts[i // group] for i in range(size)], dtype=object)[perm]  # (bs,) shuffled uids
    lengths = torch.randint(1, width + 1, (size,), generator=g)  # (bs,)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()  # (bs, T)
    rewards = torch.zeros(size, width)  # (bs, T)
    rewards[torch.arange(size), lengths - 1] = (torch.rand(size, generator=g) < 0.4).float()  # outcome on last token
    return {"token_level_rewards": rewards, "response_mask": mask, "index": index, "config": None}


def call(name: str, inputs: dict) -> torch.Tensor:
    advantages, _ = get_adv_estimator_fn(name)(**inputs)  # neither writes into its inputs
    return advantages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,16384,131072", help="comma list of batch sizes (responses)")
    parser.add_argument("--group", type=int, default=8, help="responses per prompt (rollout.n)")
    parser.add_argument("--width", type=int, default=256, help="padded response length T")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, group {args.group}, T {args.width}, "
          f"warmup {args.warmup}, reps {args.reps} (median)")  # fmt: skip
    print(f"{'responses':>10}{'opo ms':>10}{'(min)':>9}{'vectorized ms':>15}{'(min)':>9}"
          f"{'speed-up':>10}{'(of mins)':>11}{'max |diff|':>12}")  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        inputs = make_inputs(size, args.group, args.width)
        diff = (call("opo", inputs) - call("opo_vectorized", inputs)).abs().max().item()
        times: dict[str, list[float]] = {"opo": [], "opo_vectorized": []}
        for rep in range(args.warmup + args.reps):
            for name in times:
                start = time.perf_counter()
                call(name, inputs)
                if rep >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        loop, vec = statistics.median(times["opo"]), statistics.median(times["opo_vectorized"])
        loop_min, vec_min = min(times["opo"]), min(times["opo_vectorized"])
        print(f"{size:>10}{loop * 1e3:>10.1f}{loop_min * 1e3:>9.1f}{vec * 1e3:>15.2f}{vec_min * 1e3:>9.2f}"
              f"{loop / vec:>9.1f}x{loop_min / vec_min:>10.1f}x{diff:>12.1e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
