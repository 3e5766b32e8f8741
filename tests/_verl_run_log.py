"""A realistic verl file-logger JSONL, written by verl's own ``FileLogger`` with metrics from our real losses.

Each training step draws micro-batches of sequences (lengths growing over steps, as in a run whose responses
get longer), runs the real registered ``fspo`` loss on each micro-batch, and reduces the per-micro-batch
metric dicts with verl's ``reduce_metrics`` (the mean, as the trainer does). The step's line also carries
verl's data-metric keys (``critic/score/*``, ``response_length/*``, ``timing_s/*``); validation metrics go
on separate lines, at step 0 before training and at the last step, as verl's trainer logs them.

``write_run`` returns the file and, per step and bin, the TRUE clip rate of the drawn sequences (from
``fspo_verl.diagnostics.clip_rates``), so tests can check what the plot command derives from the logged counts.

FOLLOW-UP: replace or complement with the JSONL of a real CPU end-to-end run once the CPU backend lands
(see ``test_plot_from_real_cpu_e2e_run`` in tests/test_plotting.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import verl  # noqa: F401  (loads the plugin: registers fspo/sspo)
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.metric import reduce_metrics
from verl.utils.tracking import FileLogger
from verl.workers.config.actor import FSDPActorConfig

from fspo_verl.diagnostics.clip_rates import sequence_clipped
from fspo_verl.losses.config import FSPOPolicyLossConfig
from fspo_verl.losses.length_bins import bin_index, bin_names

MAX_RESPONSE = 6000
PROMPT_LENGTH = 120


def actor_config(loss_mode: str = "fspo", **policy: object) -> FSDPActorConfig:
    return FSDPActorConfig(
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        policy_loss=FSPOPolicyLossConfig(loss_mode=loss_mode, **policy),
    )


def write_run(
    path: Path,
    steps: int = 6,
    micro_batches: int = 3,
    bs: int = 16,
    sigma: float = 0.02,
    loss_mode: str = "fspo",
    seed: int = 0,
) -> tuple[Path, dict[int, dict[str, float]]]:
    """Write the JSONL; return (path, {step: {bin: true clip rate or None for an empty bin}})."""
    gen = torch.Generator().manual_seed(seed)
    config = actor_config(loss_mode)
    edges = list(config.policy_loss.length_bins)
    loss_fn = get_policy_loss_fn(loss_mode)
    truth: dict[int, dict[str, float]] = {}

    old_env = os.environ.get("VERL_FILE_LOGGER_PATH")
    os.environ["VERL_FILE_LOGGER_PATH"] = str(path)
    try:
        logger = FileLogger(project_name="fspo_verl_tests", experiment_name="fixture")
    finally:
        if old_env is None:
            os.environ.pop("VERL_FILE_LOGGER_PATH")
        else:
            os.environ["VERL_FILE_LOGGER_PATH"] = old_env
    logger.log({"val-core/openai/gsm8k/reward/mean@1": 0.12, "val-aux/openai/gsm8k/score/std@1": 0.3}, step=0)

    for step in range(1, steps + 1):
        per_micro: dict[str, list[float]] = {}
        all_len, all_flags, all_scores = [], [], []
        for _ in range(micro_batches):
            median = 150.0 * 1.8**step  # responses get longer as training goes on
            lengths = (median * torch.exp(0.8 * torch.randn(bs, generator=gen))).round().clamp(1, MAX_RESPONSE)  # (bs,)
            width = int(lengths.max())
            mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # (bs, T) bool, as verl's ppo_loss passes
            old = -torch.rand(bs, width, generator=gen) * 2.0  # (bs, T)
            # d ~ N(-sigma^2/2, sigma^2): E_old[exp(d)] = 1, as when the old policy sampled the tokens
            new = old - 0.5 * sigma**2 + sigma * torch.randn(bs, width, generator=gen)  # (bs, T)
            scores = (torch.rand(bs, generator=gen) < 0.2 + 0.08 * step).float()  # (bs,) 0/1 rewards
            adv = (scores - scores.mean()).unsqueeze(1).expand(bs, width)  # (bs, T)
            _, metrics = loss_fn(
                old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                loss_agg_mode="seq-mean-token-mean", config=config, rollout_is_weights=None,
            )  # fmt: skip
            for key, value in metrics.items():
                per_micro.setdefault(key, []).append(value)
            all_flags.append(sequence_clipped(loss_mode, old, new, adv, mask, config))
            all_len.append(lengths)
            all_scores.append(scores)
        lengths, flags, scores = torch.cat(all_len), torch.cat(all_flags), torch.cat(all_scores)  # (N,) each
        idx = bin_index(lengths, edges)  # (N,)
        truth[step] = {
            name: (int(flags[idx == k].sum()) / int((idx == k).sum()) if (idx == k).any() else None)
            for k, name in enumerate(bin_names(edges))
        }
        data = reduce_metrics(per_micro)
        data.update(
            {
                "critic/score/mean": scores.mean().item(),
                "critic/score/max": scores.max().item(),
                "critic/score/min": scores.min().item(),
                "critic/rewards/mean": scores.mean().item(),
                "response_length/mean": lengths.mean().item(),
                "response_length/max": lengths.max().item(),
                "response_length/min": lengths.min().item(),
                "response_length/clip_ratio": (lengths == MAX_RESPONSE).float().mean().item(),
                # the step's sequence count, as verl logs it: every token is a prompt or a response token
                "prompt_length/mean": float(PROMPT_LENGTH),
                "perf/total_num_tokens": lengths.sum().item() + PROMPT_LENGTH * lengths.numel(),
                "timing_s/gen": 3.1 + 0.2 * step,
                "timing_s/adv": 0.004,
                "timing_s/update_actor": 1.7 + 0.1 * step,
                "timing_s/step": 5.2 + 0.3 * step,
                "training/global_step": step,
                "training/epoch": 0,
            }
        )
        logger.log(data, step=step)
    logger.log({"val-core/openai/gsm8k/reward/mean@1": 0.31}, step=steps)
    logger.finish()
    return path, truth
