"""PODS / GFPO rollout down-sampling inside verl's V1 trainer: generate n responses per prompt, train on m.

PODS (arXiv 2504.13818) and GFPO (arXiv 2508.09726). ``PODSReplayBuffer`` (sync trainer) and
``PODSReplayBufferAsync`` (``colocate_async`` / ``separate_async``) subclass verl's V1 replay buffers.
verl calls ``sample()`` after the reward workers have written ``rm_scores`` and before old log-prob, so
the responses dropped here never reach old log-prob, reference log-prob, values, advantages or the actor
update: the saving is real compute, not masked rows. Advantages are computed on the kept subset (GRPO's
group statistics then use the m kept rewards, as in the paper).

Selected purely by config::

    trainer.v1.sampler.custom_sampler.path=pkg://fspo_verl.pods
    trainer.v1.sampler.custom_sampler.name=PODSReplayBuffer          # PODSReplayBufferAsync for async modes
    +trainer.v1.sampler.sampler_kwargs.rule=max_variance             # any name in downsampling.DOWNSAMPLERS
    +trainer.v1.sampler.sampler_kwargs.keep=16                       # m, 1 <= m < rollout.n

What one ``sample()`` does on the ``train`` partition (``val`` is passed through untouched):
1. verl's own sampling picks ``batch_size`` finished prompt groups (with DAPO eviction when enabled).
2. Keys are ``{uid}_{session}_{turn}``. A session (one of the n rollouts, single- or multi-turn) is one
   response. Its reward is the sum of ``rm_scores`` of its last turn (verl copies the final reward onto
   every turn, so summing turns would count it several times); its length is the sum of
   ``response_mask`` over its turns.
3. Ragged groups: a prompt with c <= keep sessions (failed or missing rollouts) is kept whole; one with
   c > keep goes through the rule with a validity mask. Groups are never padded with fake responses.
4. The rule picks ``keep`` sessions per prompt; every key of a dropped session is deleted from
   TransferQueue (``kv_clear``) at once, so nothing leaks into later steps. The trainer later clears the
   kept keys as usual.
5. Metrics go back with the batch, in the ``(batch, metrics)`` pair verl's ``sample()`` returns, which the
   trainer merges into the step's logged metrics: ``pods/kept``, ``pods/dropped`` (responses),
   ``pods/reward_mean_before|after`` (mean session reward), ``pods/group_reward_var_before|after`` (mean
   over prompts of the within-prompt population variance, 0 for a single response) and
   ``pods/select_ms`` (wall time of steps 2-4: fetch scores, select, clear).

DAPO zero-variance filtering: verl does not pass ``algorithm.filter_groups`` to a custom sampler. Set
``+trainer.v1.sampler.sampler_kwargs.filter_groups_metric=<metric>`` (and, in sync mode,
``...sampler_kwargs.train_batch_size=${data.train_batch_size}``) together with
``algorithm.filter_groups.enable=True``: verl's own eviction and refill then run on all n responses before
down-sampling, which is the right order (a group whose n rewards are all equal has zero variance in every
subset). ``fspo_verl.preflight.downsampling`` enforces the pairing.

Driver-side check: ``fspo_verl.downsampling.settings`` (no TransferQueue import), run by ``fspo-verl validate|train``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

from fspo_verl.advantages.opo import group_ids
from fspo_verl.downsampling.polling import DEFAULT_POLL_INTERVAL_S
from fspo_verl.downsampling.rules import get_downsampler
from fspo_verl.downsampling.settings import (  # noqa: F401  (re-exported: the buffers' settings and errors)
    ASYNC_CLASS,
    KWARGS_KEY,
    SYNC_CLASS,
    DownsamplingConfigError,
    DownsamplingSettings,
    _plain,
)


class _DownsamplingMixin:
    """``sample()`` = verl's sampling, then keep ``settings.keep`` sessions per prompt (see module doc)."""

    _expected_modes: tuple[str, ...] = ()

    def __init__(self, *, trainer_mode: str, sampler_kwargs: Any, **kwargs: Any):
        self.settings = DownsamplingSettings.parse(sampler_kwargs)
        if trainer_mode not in self._expected_modes:
            right = SYNC_CLASS if trainer_mode == "sync" else ASYNC_CLASS
            raise DownsamplingConfigError(
                f"trainer.v1.sampler.custom_sampler.name={type(self).__name__} does not serve "
                f"trainer.v1.trainer_mode={trainer_mode}; set trainer.v1.sampler.custom_sampler.name={right}"
            )
        self._rule = get_downsampler(self.settings.rule)
        if self.settings.filter_groups_metric is not None:
            if trainer_mode == "sync" and not self.settings.train_batch_size:
                raise DownsamplingConfigError(
                    f"{KWARGS_KEY}.filter_groups_metric needs {KWARGS_KEY}.train_batch_size in sync mode; "
                    f"set +{KWARGS_KEY}.train_batch_size=${{data.train_batch_size}}"
                )
            kwargs.update(
                filter_groups_metric=self.settings.filter_groups_metric,
                train_batch_size=self.settings.train_batch_size,
                gen_batch_size=1,
                max_inflight_gen_batches=self.settings.max_inflight_gen_batches,
            )
        # verl passes no poll_interval to a custom sampler; ours polls fast by default (fspo_verl.downsampling.polling)
        kwargs.setdefault("poll_interval", DEFAULT_POLL_INTERVAL_S)
        super().__init__(trainer_mode=trainer_mode, sampler_kwargs=sampler_kwargs, **kwargs)

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[KVBatchMeta, dict]:
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "val" or len(batch) == 0:
            return batch, metrics
        kept, pods_metrics = self.downsample(batch, global_steps)
        return kept, {**metrics, **pods_metrics}

    def downsample(self, batch: KVBatchMeta, global_steps: int) -> tuple[KVBatchMeta, dict[str, float]]:
        """Keep ``settings.keep`` sessions per prompt of ``batch``; clear every other key from TransferQueue."""
        start = time.perf_counter()
        sessions = _Sessions.read(batch)
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + int(global_steps))
        kept_session = keep_per_group(
            sessions.rewards, sessions.lengths, sessions.group, self.settings.keep, self._rule, generator
        )  # (S,) bool
        kept_key = kept_session[sessions.session_of_key]  # (K,) bool
        dropped = [key for key, keep in zip(batch.keys, kept_key.tolist(), strict=True) if not keep]
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
        keep_list = kept_key.tolist()
        out = KVBatchMeta(
            keys=[k for k, keep in zip(batch.keys, keep_list, strict=True) if keep],
            tags=[t for t, keep in zip(batch.tags, keep_list, strict=True) if keep],
            partition_id=batch.partition_id,
            fields=batch.fields,
            extra_info=batch.extra_info,
        )
        metrics = downsampling_metrics(sessions.rewards, sessions.group, kept_session, sessions.lengths)
        metrics["pods/select_ms"] = (time.perf_counter() - start) * 1e3
        return out, metrics


class PODSReplayBuffer(_DownsamplingMixin, ReplayBuffer):
    """verl's sync V1 ``ReplayBuffer`` with PODS/GFPO down-sampling. For ``trainer.v1.trainer_mode=sync``."""

    _expected_modes = ("sync",)


class PODSReplayBufferAsync(_DownsamplingMixin, ReplayBufferAsync):
    """verl's ``ReplayBufferAsync`` with PODS/GFPO down-sampling. For ``colocate_async``/``separate_async``."""

    _expected_modes = ("colocate_async", "separate_async")


@dataclasses.dataclass
class _Sessions:
    """One row per session (response) of a sampled batch.

    rewards: (S,) float64, rm_scores sum of the session's last turn.
    lengths: (S,) float64, response_mask sum over the session's turns.
    group: (S,) long, dense prompt id.
    session_of_key: (K,) long, the session of each batch key.
    """

    rewards: torch.Tensor
    lengths: torch.Tensor
    group: torch.Tensor
    session_of_key: torch.Tensor

    @classmethod
    def read(cls, batch: KVBatchMeta) -> _Sessions:
        parts = [key.split("_") for key in batch.keys]
        bad = [key for key, p in zip(batch.keys, parts, strict=True) if len(p) != 3]
        if bad:
            raise ValueError(f"PODS expects TransferQueue keys '{{uid}}_{{session}}_{{turn}}', got {bad[:3]}")
        try:
            data = tq.kv_batch_get(
                keys=batch.keys, partition_id=batch.partition_id, select_fields=["rm_scores", "response_mask"]
            )
            scores = [float(v.sum()) for v in data["rm_scores"]]  # K floats
            token_counts = [float(v.sum()) for v in data["response_mask"]]  # K floats
        except (KeyError, RuntimeError, ValueError) as err:
            raise RuntimeError(
                "PODS needs each trajectory's rm_scores at sampling time, but TransferQueue has none "
                f"({err}). The reward must be computed by the reward-loop workers: use a rule-based reward or "
                "set reward.reward_model.enable_resource_pool=True."
            ) from err
        session_names = [f"{p[0]}_{p[1]}" for p in parts]
        session_of_key, n_sessions = group_ids(session_names)  # (K,), S
        turn = torch.tensor([int(p[2]) for p in parts], dtype=torch.long)  # (K,)
        score = torch.tensor(scores, dtype=torch.float64)  # (K,)
        # the last turn of each session: max turn index per session, then the key holding it
        last_turn = torch.full((n_sessions,), -1, dtype=torch.long).scatter_reduce(
            0, session_of_key, turn, reduce="amax"
        )  # (S,)
        is_last = turn == last_turn[session_of_key]  # (K,) bool
        rewards = torch.zeros(n_sessions, dtype=torch.float64).index_add_(0, session_of_key[is_last], score[is_last])
        lengths = torch.zeros(n_sessions, dtype=torch.float64).index_add_(
            0, session_of_key, torch.tensor(token_counts, dtype=torch.float64)
        )  # (S,)
        first_key = torch.full((n_sessions,), len(parts), dtype=torch.long).scatter_reduce(
            0, session_of_key, torch.arange(len(parts)), reduce="amin"
        )  # (S,)
        group, _ = group_ids([parts[i][0] for i in first_key.tolist()])  # (S,)
        return cls(rewards=rewards, lengths=lengths, group=group, session_of_key=session_of_key)


def keep_per_group(
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    group: torch.Tensor,
    keep: int,
    rule: Any,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which responses to keep: ``keep`` per group by ``rule``; groups of ``keep`` or fewer stay whole.

    Args:
        rewards: (S,) float, lengths: (S,), group: (S,) long dense group ids 0..G-1, in any order.
        keep: m. rule: a registered rule ``(rewards, lengths, valid, m, generator) -> (R, m)``.

    Returns:
        (S,) bool.
    """
    n_groups = int(group.max()) + 1 if group.numel() else 0
    counts = torch.bincount(group, minlength=n_groups)  # (G,)
    order = torch.sort(group, stable=True).indices  # (S,) sessions grouped, original order within a group
    starts = counts.cumsum(0) - counts  # (G,)
    slot = torch.empty_like(group)
    slot[order] = torch.arange(group.numel()) - starts[group[order]]  # (S,) position within its group
    width = int(counts.max()) if n_groups else 0
    valid = torch.zeros(n_groups, width, dtype=torch.bool).index_put_((group, slot), torch.tensor(True))  # (G, n)
    padded_r = torch.zeros(n_groups, width, dtype=torch.float64).index_put_((group, slot), rewards.double())  # (G, n)
    padded_l = torch.zeros(n_groups, width, dtype=torch.float64).index_put_((group, slot), lengths.double())  # (G, n)

    kept = valid.clone()  # (G, n) groups with <= keep responses keep all
    rows = torch.nonzero(counts > keep).squeeze(1)  # (R,)
    if rows.numel():
        chosen = rule(padded_r[rows], padded_l[rows], valid[rows], keep, generator)  # (R, m)
        kept[rows] = torch.zeros_like(valid[rows]).scatter_(1, chosen, True)
    return kept[group, slot]  # (S,)


def downsampling_metrics(
    rewards: torch.Tensor, group: torch.Tensor, kept: torch.Tensor, lengths: torch.Tensor | None = None
) -> dict[str, float]:
    """pods/* metrics for (S,) rewards, (S,) dense group ids, the (S,) bool kept mask and, if given, the (S,)
    response lengths (tokens, summed over a session's turns). verl's own ``critic/score/*`` and
    ``response_length/*`` see only the kept m; the ``*_before`` values are the policy's, over all n."""

    def mean_group_var(mask: torch.Tensor) -> float:
        g, r = group[mask], rewards[mask].double()  # (S',)
        n_groups = int(group.max()) + 1
        count = torch.bincount(g, minlength=n_groups).double()  # (G,)
        total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, r)  # (G,)
        mean = total / count.clamp(min=1)  # (G,)
        sq_dev = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, (r - mean[g]) ** 2)  # (G,)
        present = count > 0
        return float((sq_dev[present] / count[present]).mean())

    return {
        "pods/kept": int(kept.sum()),
        "pods/dropped": int((~kept).sum()),
        "pods/reward_mean_before": float(rewards.mean()),
        "pods/reward_mean_after": float(rewards[kept].mean()),
        "pods/group_reward_var_before": mean_group_var(torch.ones_like(kept)),
        "pods/group_reward_var_after": mean_group_var(kept),
        **(
            {}
            if lengths is None
            else {
                "pods/response_length_before": float(lengths.double().mean()),
                "pods/response_length_after": float(lengths[kept].double().mean()),
            }
        ),
    }
