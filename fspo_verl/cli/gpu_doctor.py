"""``fspo-verl doctor --gpu``: check one GPU node before a large job, one line per check.

Checks, in order (each needs the previous ones' GPU; when there is none they are reported ``[skip]``, never
``[ok]``):

    cuda      torch sees a CUDA device: its name, torch's CUDA version, the device count
    nccl      a one-rank NCCL process group initialises and all-reduces a tensor on the GPU
    loss:<m>  our loss m (fspo, sspo) on CUDA matches its CPU result: loss, gradient and metrics
    timing    forward + backward time of fspo and sspo against verl's vanilla on the GPU (same process,
              interleaved, median); fails above ``TIMING_LIMIT`` x vanilla
    demo      a real 5-step run of the demo, ``fspo-verl train cluster=1gpu_hf`` (verl's trainer, FSDP2, the
              hf rollout on the GPU), and its median step time after the first step

Exit status 0 only when every check is ``[ok]``; otherwise 1, and the last line names the failed checks.
Without a GPU: one ``[FAIL] cuda`` line saying so, the rest ``[skip]``, exit 1. A check's exception becomes
its FAIL line (type and message), never a traceback. The checks are plain functions in :data:`CHECKS`, so
the report's format and exit status are tested with fakes (``run_checks(checks=...)``).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: the (B, T) of the loss checks: the shapes of ``benchmarks/bench_losses.py``'s GPU table
TIMING_SHAPE = (256, 8192)
#: fspo/sspo above this multiple of vanilla's median time fail the timing check. Our choice: the target is
#: 1.0x; 10% covers the run-to-run noise of a ~2 ms median on a shared node.
TIMING_LIMIT = 1.10
#: the demo run: steps, and the wall-clock limit (start-up, model build and 5 steps; the whole doctor should
#: take under 3 minutes)
DEMO_STEPS = 5
DEMO_TIMEOUT_S = 150


class Skip(Exception):
    """A check that cannot run here (no GPU); reported ``[skip]``."""


class CheckFailed(Exception):
    """A check's own finding; its FAIL line is the message alone (other exceptions show their type too)."""


@dataclass
class Result:
    name: str
    status: str  # "ok" | "FAIL" | "skip"
    detail: str


Check = Callable[[], str]  # returns its detail; raises Skip or any exception (= FAIL)


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise Skip("needs a CUDA GPU")


def check_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise CheckFailed(
            f"no CUDA GPU visible to torch {torch.__version__} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); GPU checks skipped"
        )
    return (
        f"{torch.cuda.get_device_name(0)}, torch {torch.__version__} with CUDA {torch.version.cuda}, "
        f"{torch.cuda.device_count()} device(s)"
    )


def check_nccl() -> str:
    _require_cuda()
    import torch
    import torch.distributed as dist

    with tempfile.TemporaryDirectory() as tmp:
        store = dist.FileStore(os.path.join(tmp, "store"), 1)
        dist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0))
        try:
            value = torch.ones(4, device="cuda")
            dist.all_reduce(value)
            torch.cuda.synchronize()
            ok = bool((value == 1).all())
        finally:
            dist.destroy_process_group()
    if not ok:
        raise CheckFailed("all_reduce over one rank changed the tensor")
    version = torch.cuda.nccl.version()
    version = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return f"NCCL {version}: one-rank group initialised, all_reduce on cuda:0"


def _make_inputs(batch: int, width: int, device: str):
    """verl-shaped fp32 micro-batch (as in ``benchmarks/bench_losses.py``): all (B, T), lengths in [T/8, T]."""
    import torch

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(width // 8, 1), width + 1, (batch,), generator=g)  # (B,)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T) bool
    old = -2.0 * torch.rand(batch, width, generator=g)  # (B, T)
    new = old + 0.05 * torch.randn(batch, width, generator=g)  # (B, T)
    adv = torch.randn(batch, 1, generator=g).expand(batch, width).contiguous()  # (B, T)
    return {
        "old_log_prob": old.to(device),
        "log_prob": new.to(device).requires_grad_(True),
        "advantages": adv.to(device),
        "response_mask": mask.to(device),
    }


def _actor_config(mode: str):
    from verl.workers.config.actor import FSDPActorConfig

    from fspo_verl.losses.config import FSPOPolicyLossConfig

    return FSDPActorConfig(
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        loss_agg_mode="seq-mean-token-mean",
        policy_loss=FSPOPolicyLossConfig(loss_mode=mode),
    )


def _run_loss(mode: str, inputs: dict, config) -> tuple[float, object, dict]:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    inputs["log_prob"].grad = None
    loss, metrics = get_policy_loss_fn(mode)(**inputs, loss_agg_mode="seq-mean-token-mean", config=config,
                                             rollout_is_weights=None)  # fmt: skip
    loss.backward()
    return float(loss), inputs["log_prob"].grad, metrics


def loss_check(mode: str) -> Check:
    """``mode`` on CUDA against the same call on CPU (fp32, (64, 1024)): loss, gradient, every metric."""

    def check() -> str:
        _require_cuda()
        import math

        import torch

        config = _actor_config(mode)
        cpu = _run_loss(mode, _make_inputs(64, 1024, "cpu"), config)
        gpu = _run_loss(mode, _make_inputs(64, 1024, "cuda"), config)
        gpu = (gpu[0], gpu[1].cpu(), gpu[2])
        if not math.isclose(cpu[0], gpu[0], rel_tol=1e-4, abs_tol=1e-6):
            raise CheckFailed(f"loss {gpu[0]!r} on cuda, {cpu[0]!r} on cpu")
        grad_err = float((cpu[1] - gpu[1]).abs().max())
        if not torch.allclose(cpu[1], gpu[1], rtol=1e-4, atol=1e-7):
            raise CheckFailed(f"gradient differs by up to {grad_err:.2e}")
        bad = [k for k in cpu[2] if not math.isclose(cpu[2][k], gpu[2][k], rel_tol=1e-4, abs_tol=1e-6)]
        if bad or set(cpu[2]) != set(gpu[2]):
            raise CheckFailed(f"metrics differ: {bad or sorted(set(cpu[2]) ^ set(gpu[2]))}")
        return f"loss {gpu[0]:.6g} = cpu, max |grad diff| {grad_err:.1e}, {len(gpu[2])} metrics equal"

    return check


def check_timing(reps: int = 15, warmup: int = 3) -> str:
    """Median fwd+bwd ms of vanilla, fspo, sspo on CUDA at ``TIMING_SHAPE``, fp32, interleaved."""
    _require_cuda()
    import torch

    modes = ("vanilla", "fspo", "sspo")
    inputs = _make_inputs(*TIMING_SHAPE, "cuda")
    configs = {m: _actor_config(m) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(warmup + reps):
        for mode in modes:
            torch.cuda.synchronize()
            start = time.perf_counter()
            _run_loss(mode, inputs, configs[mode])
            torch.cuda.synchronize()
            if rep >= warmup:
                times[mode].append(time.perf_counter() - start)
    med = {m: statistics.median(t) for m, t in times.items()}
    ratios = {m: med[m] / med["vanilla"] for m in ("fspo", "sspo")}
    detail = f"{TIMING_SHAPE[0]}x{TIMING_SHAPE[1]} fp32: vanilla {med['vanilla'] * 1e3:.2f} ms, " + ", ".join(
        f"{m} {med[m] * 1e3:.2f} ms ({ratios[m]:.2f}x)" for m in ratios
    )
    slow = [m for m, r in ratios.items() if r > TIMING_LIMIT]
    if slow:
        raise CheckFailed(f"{detail}; above {TIMING_LIMIT:.2f}x vanilla: {', '.join(slow)}")
    return detail


def check_demo(steps: int = DEMO_STEPS, timeout_s: float = DEMO_TIMEOUT_S) -> str:
    """A real ``fspo-verl train cluster=1gpu_hf`` run of ``steps`` steps; the median step time after the first."""
    _require_cuda()
    from fspo_verl.analysis.run_log import read_run
    from fspo_verl.cli.run_dir import latest_metrics

    with tempfile.TemporaryDirectory(prefix="fspo_verl_doctor_") as tmp:
        run_dir = Path(tmp) / "run"
        args = [
            "cluster=1gpu_hf",
            f"hydra.run.dir={run_dir}",
            f"trainer.total_training_steps={steps}",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
            "trainer.save_freq=-1",
            "trainer.logger=[console,file]",
            f"trainer.default_local_dir={Path(tmp) / 'checkpoints'}",
        ]
        start = time.perf_counter()
        # its own process group, so that a run past the limit is stopped with everything it started (Ray too)
        proc = subprocess.Popen([sys.executable, "-m", "fspo_verl.cli", "train", *args], cwd=tmp, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            console, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CheckFailed(f"fspo-verl train cluster=1gpu_hf did not finish {steps} steps in {timeout_s:.0f} s") from None
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            last = [ln for ln in console.splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise CheckFailed(f"fspo-verl train cluster=1gpu_hf exited {proc.returncode}: {last[0][:300]}")
        metrics = latest_metrics(run_dir)
        run = read_run(metrics) if metrics else {}
    step_s = [run[s]["timing_s/step"] for s in sorted(run) if "timing_s/step" in run[s]]
    if len(step_s) < steps:
        raise CheckFailed(f"the run logged {len(step_s)} of {steps} steps")
    reward = [run[s].get("critic/score/mean") for s in sorted(run) if "timing_s/step" in run[s]]
    return (
        f"{steps} steps in {wall:.0f} s wall; step {statistics.median(step_s[1:]):.2f} s (median after the first, "
        f"first {step_s[0]:.1f} s); reward {reward[0]:.2f} -> {reward[-1]:.2f}"
        if reward[0] is not None and reward[-1] is not None
        else f"{steps} steps in {wall:.0f} s wall; step {statistics.median(step_s[1:]):.2f} s (median after the first)"
    )


#: (name, check) in the order they run
CHECKS: list[tuple[str, Check]] = [
    ("cuda", check_cuda),
    ("nccl", check_nccl),
    ("loss:fspo", loss_check("fspo")),
    ("loss:sspo", loss_check("sspo")),
    ("timing", check_timing),
    ("demo", check_demo),
]


def run_checks(checks: list[tuple[str, Check]] | None = None, emit: Callable[[str], None] = print) -> list[Result]:
    """Run ``checks`` in order, emitting one line per check as it finishes. Once the first check (the GPU's
    presence) fails, the others are skipped; an exception in any other check is that check's FAIL."""
    results: list[Result] = []
    for index, (name, check) in enumerate(CHECKS if checks is None else checks):
        if index > 0 and results[0].status != "ok":
            result = Result(name, "skip", f"skipped: {results[0].name} failed")
        else:
            try:
                result = Result(name, "ok", check())
            except Skip as why:
                result = Result(name, "skip", f"skipped: {why}")
            except CheckFailed as finding:
                result = Result(name, "FAIL", str(finding))
            except Exception as err:  # noqa: BLE001 - every failure becomes its line, never a traceback
                result = Result(name, "FAIL", f"{type(err).__name__}: {err}")
        results.append(result)
        emit(format_line(result))
    return results


def format_line(result: Result) -> str:
    return f"[{result.status}] {result.name:<10} {result.detail}"


def summary(results: list[Result]) -> tuple[str, int]:
    """The last line and the exit status: 0 only when every check passed."""
    failed = [r.name for r in results if r.status == "FAIL"]
    skipped = [r.name for r in results if r.status == "skip"]
    if not failed and not skipped:
        return f"doctor --gpu: all {len(results)} checks passed", 0
    parts = []
    if failed:
        parts.append(f"FAILED: {', '.join(failed)}")
    if skipped:
        parts.append(f"skipped (not passed): {', '.join(skipped)}")
    return "doctor --gpu: " + "; ".join(parts), 1


def main(checks: list[tuple[str, Check]] | None = None) -> int:
    results = run_checks(checks)
    line, status = summary(results)
    print(line)
    return status
