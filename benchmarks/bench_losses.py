"""Policy-loss forward + backward: time and peak memory of fspo/fspo_adaptive/sspo against verl's built-ins.

    .venv/bin/python benchmarks/bench_losses.py                       # CPU, float32, (64,4096) and (256,8192)
    .venv/bin/python benchmarks/bench_losses.py --shapes 64x4096 --reps 9 --threads 2

What one measurement is: ``loss, metrics = get_policy_loss_fn(mode)(...)`` exactly as verl's ``ppo_loss``
calls it (keywords, bool response mask, token-level advantages, the actor config), then
``loss.backward()`` into ``log_prob`` (a leaf standing in for the model's output). Metrics' ``.item()``
calls are included: verl pays them too. Every loss uses ``loss_agg_mode=seq-mean-token-mean`` (SAPO forces
it; the sequence-level losses recommend it), so the aggregation does the same work everywhere.

``fspo_adaptive`` runs with its statistics in steady state (every call after the first updates and refits
them, as on every off-policy micro-batch of a run); ``x fspo`` is its time over fspo's.

Time: median over ``--reps`` repetitions after ``--warmup`` untimed ones, all losses interleaved in each
repetition so that background load (a shared machine) hits them alike; ``torch.set_num_threads`` is
set once to ``--threads``.

Peak memory (CPU): one extra forward+backward under ``torch.profiler`` with ``profile_memory=True``. The
profiler records every allocation and free of torch's CPU allocator with a timestamp; the peak of their
running sum is the most memory the loss held at once above the inputs (which exist before profiling). We
report it in MiB and in units of one (B, T) buffer of the input dtype, and count the allocations of at
least B*T bytes (a bool (B, T) mask or bigger). tracemalloc cannot see torch's allocations; RSS is blurred
by glibc's allocator caching. On CUDA the script uses ``torch.cuda.max_memory_allocated`` instead.
GPU: this path exists but was NOT run in this project's CPU-only sessions.

Launch cost (any device, counted on CPU): ``ops`` is the number of aten ops one forward + backward dispatches
and ``syncs`` the host syncs among them (``.item()``, ``tolist``, data-dependent shapes), counted with a
dispatch hook (``fspo_verl.diagnostics.op_count``) on a small CPU copy of the inputs. Both are deterministic.
On a GPU each op is at least one kernel launch and each sync drains the stream; at these sizes a loss costs
launches and syncs more than memory traffic, so the counts predict where a loss stands against ``vanilla``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import verl  # noqa: F401  (loads the fspo_verl plugin: registers fspo, fspo_adaptive and sspo)
from torch.profiler import ProfilerActivity, profile
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config.actor import FSDPActorConfig

from fspo_verl.diagnostics.op_count import count_loss_ops
from fspo_verl.losses.config import FSPOPolicyLossConfig

BASELINES = ("vanilla", "gspo", "geo_mean", "sapo")
OURS = ("fspo", "fspo_adaptive", "sspo")
AGG = "seq-mean-token-mean"


def make_inputs(batch: int, width: int, dtype: torch.dtype, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """verl-shaped micro-batch: all (B, T); lengths uniform in [T/8, T]; per-token log-ratio std 0.05."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(width // 8, 1), width + 1, (batch,), generator=g)  # (B,)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T) bool
    old = -2.0 * torch.rand(batch, width, generator=g)  # (B, T)
    new = old + 0.05 * torch.randn(batch, width, generator=g)  # (B, T)
    adv = torch.randn(batch, 1, generator=g).expand(batch, width).contiguous()  # (B, T) sequence advantage per token
    return {
        "old_log_prob": old.to(device=device, dtype=dtype),
        "log_prob": new.to(device=device, dtype=dtype).requires_grad_(True),
        "advantages": adv.to(device=device, dtype=dtype),
        "response_mask": mask.to(device),
    }


def actor_config(mode: str) -> FSDPActorConfig:
    return FSDPActorConfig(
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        loss_agg_mode=AGG,
        policy_loss=FSPOPolicyLossConfig(loss_mode=mode),
    )


def step(mode: str, inputs: dict[str, torch.Tensor], config: FSDPActorConfig) -> None:
    """One forward + backward, as verl's ppo_loss calls the loss."""
    inputs["log_prob"].grad = None
    loss, _ = get_policy_loss_fn(mode)(**inputs, loss_agg_mode=AGG, config=config, rollout_is_weights=None)
    loss.backward()


def op_counts(losses: list[str], dtype: torch.dtype) -> dict[str, tuple[int, int]]:
    """(aten ops, host syncs) of one forward + backward per loss, counted on a (16, 64) CPU micro-batch.

    The second call of each loss is counted: the first also builds per-process constants (bin edges, tau).
    """
    inputs = make_inputs(16, 64, dtype, "cpu")
    counts = {}
    for mode in losses:
        config, fn = actor_config(mode), get_policy_loss_fn(mode)
        for _ in range(2):
            counts[mode] = count_loss_ops(fn, inputs, loss_agg_mode=AGG, config=config, rollout_is_weights=None)
    return counts


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(mode: str, inputs: dict[str, torch.Tensor], config: FSDPActorConfig, device: str) -> tuple[int, int]:
    """(peak bytes above the inputs, allocations of >= B*T bytes) during one forward + backward."""
    numel = inputs["log_prob"].numel()
    inputs["log_prob"].grad = None
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(mode, inputs, config)
        _sync(device)
        return torch.cuda.max_memory_allocated() - base, -1
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(mode, inputs, config)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = big = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
        big += event.nbytes() >= numel
    return peak, big


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="64x4096,256x8192", help="comma list of BxT")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--losses", default=",".join(BASELINES + OURS))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    losses = [m.strip() for m in args.losses.split(",") if m.strip()]
    print(f"torch {torch.__version__}, device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"warmup {args.warmup}, reps {args.reps} (median), loss_agg_mode {AGG}")  # fmt: skip
    counts = op_counts(losses, dtype)
    for shape in args.shapes.split(","):
        batch, width = (int(x) for x in shape.lower().split("x"))
        inputs = make_inputs(batch, width, dtype, args.device)
        configs = {m: actor_config(m) for m in losses}
        times: dict[str, list[float]] = {m: [] for m in losses}
        for rep in range(args.warmup + args.reps):
            for mode in losses:  # interleaved: background load hits every loss alike
                _sync(args.device)
                start = time.perf_counter()
                step(mode, inputs, configs[mode])
                _sync(args.device)
                if rep >= args.warmup:
                    times[mode].append(time.perf_counter() - start)
        buffer = batch * width * inputs["log_prob"].element_size()
        memory = {m: peak_memory(m, inputs, configs[m], args.device) for m in losses}
        med = {m: statistics.median(t) for m, t in times.items()}
        ref_t, ref_m = med.get("vanilla"), memory.get("vanilla", (0, 0))[0]
        print(f"\n(B, T) = ({batch}, {width}); one (B, T) {args.dtype} buffer = {buffer / 2**20:.1f} MiB")
        fspo_t = med.get("fspo")
        print(f"{'loss':<14}{'median ms':>11}{'min ms':>9}{'x vanilla':>11}{'x fspo':>8}{'peak MiB':>10}"
              f"{'peak/(B,T)':>12}{'x vanilla':>11}{'allocs>=BT':>12}{'ops':>6}{'syncs':>7}")  # fmt: skip
        for mode in losses:
            peak, big = memory[mode]
            t_ratio = f"{med[mode] / ref_t:.2f}" if ref_t else "-"
            f_ratio = f"{med[mode] / fspo_t:.2f}" if fspo_t else "-"
            m_ratio = f"{peak / ref_m:.2f}" if ref_m else "-"
            print(f"{mode:<14}{med[mode] * 1e3:>11.1f}{min(times[mode]) * 1e3:>9.1f}{t_ratio:>11}{f_ratio:>8}"
                  f"{peak / 2**20:>10.1f}{peak / buffer:>12.2f}{m_ratio:>11}{big if big >= 0 else '-':>12}"
                  f"{counts[mode][0]:>6}{counts[mode][1]:>7}")  # fmt: skip
        del inputs
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
