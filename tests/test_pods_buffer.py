"""PODSReplayBuffer(Async) against a real TransferQueue on CPU (Ray local, SimpleStorage).

Trajectories are written the way verl's agent loop writes them (``agent_loop_tq.py``): keys
``{uid}_{session}_{turn}``, ``rm_scores`` with the session's reward on the last token of every turn,
``response_mask``, and a prompt key ``{uid}`` whose status turns ``finished`` after its trajectories.
"""

from __future__ import annotations

import uuid

import pytest
import ray
import torch
import transfer_queue as tq
from transfer_queue import KVBatchMeta

from fspo_verl.downsampling.replay_buffer import (
    DownsamplingConfigError,
    PODSReplayBuffer,
    PODSReplayBufferAsync,
    keep_per_group,
)
from fspo_verl.downsampling.rules import get_downsampler, select_max_variance

POLL_INTERVAL = 0.05


@pytest.fixture(scope="module")
def transfer_queue():
    started_ray = not ray.is_initialized()
    if started_ray:
        # our own local instance (never join a colleague's cluster); logical CPUs for the TQ actors
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    tq.init({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}})
    yield
    tq.close()
    if started_ray:
        ray.shutdown()


@pytest.fixture
def partition(transfer_queue):
    """A fresh training partition per test; its leftovers are cleared so other tests never see them."""
    pid = f"train-{uuid.uuid4().hex[:8]}"
    yield pid
    _clear(pid)


def _clear(pid: str) -> None:
    keys = list(tq.kv_list(partition_id=pid).get(pid, {}))
    if keys:
        tq.kv_clear(keys=keys, partition_id=pid)


def _uid() -> str:
    return uuid.uuid4().hex  # no "_": verl derives the uid with key.split("_")[0]


def _put_group(pid: str, rewards: list[float], turns: dict[int, int] | None = None, lengths: list[int] | None = None) -> str:
    """Write one finished prompt group; session s gets ``turns[s]`` turns (default 1). Returns its uid."""
    uid = _uid()
    turns = turns or {}
    for session, reward in enumerate(rewards):
        length = lengths[session] if lengths else 3 + session
        for turn in range(turns.get(session, 1)):
            rm_scores = torch.zeros(length)
            rm_scores[-1] = reward  # verl copies the final reward onto every turn
            tq.kv_put(
                key=f"{uid}_{session}_{turn}",
                partition_id=pid,
                fields={"rm_scores": rm_scores, "response_mask": torch.ones(length, dtype=torch.int64)},
                tag={"status": "success", "seq_len": 8 + length, "global_steps": 0, "session": session},
            )
    tq.kv_put(key=uid, partition_id=pid, tag={"is_prompt": True, "status": "finished", "global_steps": 0})
    return uid


def _make(cls=PODSReplayBuffer, mode: str = "sync", **sampler_kwargs) -> PODSReplayBuffer:
    return cls(
        trainer_mode=mode,
        trainer_config={},
        max_off_policy_threshold=8,
        max_off_policy_strategy="drop",
        sampler_kwargs={"keep": 2, **sampler_kwargs},
        poll_interval=POLL_INTERVAL,
        refill_fn=None,
    )


def _stored(pid: str) -> set[str]:
    return set(tq.kv_list(partition_id=pid).get(pid, {}))


def _sessions(keys: list[str]) -> set[str]:
    return {key.rsplit("_", 1)[0] for key in keys}


@pytest.mark.parametrize(("cls", "mode"), [(PODSReplayBuffer, "sync"), (PODSReplayBufferAsync, "colocate_async")])
def test_keeps_max_variance_sessions_and_clears_the_rest(partition: str, cls, mode: str) -> None:
    a = _put_group(partition, [0.1, 0.5, 0.9, 0.2, 0.3, 0.4])  # max variance pair: {0.1, 0.9}
    b = _put_group(partition, [1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # the 0 and the last 1 (stable-sort tie rule)
    c = _put_group(partition, [0.7, 0.2])  # ragged: only keep=2 sessions finished, kept whole
    # multi-turn: sessions 1 and 2 have two turns. A session's reward is its last turn's score (0.6 and 1.0);
    # summing the turns would make session 1 worth 1.2 and flip the choice to {0, 1}.
    d = _put_group(partition, [0.0, 0.6, 1.0, 0.5], turns={1: 2, 2: 2})

    rb = _make(cls, mode)
    batch, metrics = rb.sample(global_steps=1, partition_id=partition, batch_size=4)

    expected_sessions = {f"{a}_0", f"{a}_2", f"{b}_4", f"{b}_5", f"{c}_0", f"{c}_1", f"{d}_0", f"{d}_2"}
    expected_keys = {f"{s}_0" for s in expected_sessions} | {f"{d}_2_1"}
    assert set(batch.keys) == expected_keys
    assert len(batch.keys) == len(batch.tags)
    assert [t["session"] for t in batch.tags] == [int(k.split("_")[1]) for k in batch.keys]  # tags follow keys
    assert batch.partition_id == partition

    # dropped trajectories and the prompt keys are gone; the kept ones are still readable
    assert _stored(partition) == expected_keys
    data = tq.kv_batch_get(keys=batch.keys, partition_id=partition, select_fields=["rm_scores"])
    assert len(list(data["rm_scores"])) == len(batch.keys)

    # 18 sessions in, 8 kept; rewards counted once per session
    before = [0.1, 0.5, 0.9, 0.2, 0.3, 0.4] + [1.0] * 4 + [0.0, 1.0] + [0.7, 0.2] + [0.0, 0.6, 1.0, 0.5]
    after = [0.1, 0.9, 0.0, 1.0, 0.7, 0.2, 0.0, 1.0]
    assert metrics["pods/kept"] == 8 and metrics["pods/dropped"] == 10
    assert metrics["pods/reward_mean_before"] == pytest.approx(sum(before) / len(before))
    assert metrics["pods/reward_mean_after"] == pytest.approx(sum(after) / len(after))
    var_after = (0.16 + 0.25 + 0.0625 + 0.25) / 4  # population variances of the kept pairs
    assert metrics["pods/group_reward_var_after"] == pytest.approx(var_after)
    assert metrics["pods/group_reward_var_after"] > metrics["pods/group_reward_var_before"]
    assert metrics["pods/select_ms"] >= 0.0
    # response lengths (3 + session tokens a turn; d's sessions 1 and 2 have two turns): all n, then the kept m
    lengths_before = [3, 4, 5, 6, 7, 8] * 2 + [3, 4] + [3, 8, 10, 6]
    lengths_after = [3, 5, 7, 8, 3, 4, 3, 10]
    assert metrics["pods/response_length_before"] == pytest.approx(100 / 18) == pytest.approx(sum(lengths_before) / 18)
    assert metrics["pods/response_length_after"] == pytest.approx(43 / 8) == pytest.approx(sum(lengths_after) / 8)

    # the trainer clears the keys it trained on; nothing from this step may remain for the next one
    tq.kv_clear(keys=batch.keys, partition_id=partition)
    assert _stored(partition) == set()


def test_gfpo_shortest_rule_uses_lengths_summed_over_turns(partition: str) -> None:
    # session 0 is short per turn (2 tokens) but has 3 turns = 6 tokens; sessions 2 and 3 are the shortest
    uid = _put_group(partition, [1.0, 1.0, 1.0, 1.0], turns={0: 3}, lengths=[2, 9, 4, 5])
    batch, metrics = _make(rule="shortest").sample(global_steps=1, partition_id=partition, batch_size=1)
    assert _sessions(batch.keys) == {f"{uid}_2", f"{uid}_3"}
    assert metrics["pods/dropped"] == 2


def test_validation_partition_is_untouched(transfer_queue) -> None:
    _clear("val")
    uids = [_put_group("val", [0.0, 0.3, 0.6, 1.0]) for _ in range(2)]
    try:
        batch, metrics = _make().sample(global_steps=1, partition_id="val", batch_size=2)
        assert len(batch.keys) == 8 and _sessions(batch.keys) == {f"{u}_{s}" for u in uids for s in range(4)}
        assert not any(k.startswith("pods/") for k in metrics)
        assert _stored("val") == set(batch.keys)  # only the prompt keys were consumed, as verl does
    finally:
        _clear("val")


def test_random_rule_is_reproducible_per_step(partition: str) -> None:
    def run(step: int) -> frozenset[str]:
        _put_group(partition, [0.0] * 8)
        batch, _ = _make(rule="random", seed=3).sample(global_steps=step, partition_id=partition, batch_size=1)
        tq.kv_clear(keys=batch.keys, partition_id=partition)
        return frozenset(session.split("_")[1] for session in _sessions(batch.keys))  # session numbers

    assert run(5) == run(5)
    assert len({run(step) for step in range(1, 7)}) > 1


def test_missing_rm_scores_raises_with_the_fix(partition: str) -> None:
    uid = _uid()
    for s in range(3):
        tq.kv_put(key=f"{uid}_{s}_0", partition_id=partition, fields={"response_mask": torch.ones(3, dtype=torch.int64)}, tag={"seq_len": 3})
    tq.kv_put(key=uid, partition_id=partition, tag={"is_prompt": True, "status": "finished", "global_steps": 0})
    with pytest.raises(RuntimeError, match="enable_resource_pool=True"):
        _make().sample(global_steps=1, partition_id=partition, batch_size=1)


def test_downsample_rejects_keys_not_in_verl_format(partition: str) -> None:
    with pytest.raises(ValueError, match="uid"):
        _make().downsample(KVBatchMeta(keys=["abc_1"], tags=[{}], partition_id=partition), global_steps=1)


def test_wrong_class_for_trainer_mode_names_the_fix() -> None:
    with pytest.raises(DownsamplingConfigError, match="custom_sampler.name=PODSReplayBufferAsync"):
        _make(PODSReplayBuffer, "separate_async")
    with pytest.raises(DownsamplingConfigError, match="custom_sampler.name=PODSReplayBuffer$"):
        _make(PODSReplayBufferAsync, "sync")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"keep": 0}, "keep=0"), ({"rule": "nope"}, "rule='nope'"), ({"kepp": 2}, r"unknown key\(s\) \['kepp'\]")],
)
def test_bad_sampler_kwargs_fail_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(DownsamplingConfigError, match=match):
        _make(**kwargs)


def test_dapo_zero_variance_groups_are_evicted_before_downsampling(partition: str) -> None:
    """filter_groups_metric forwards to verl's own DAPO eviction + refill, which runs on all n responses."""
    refilled: list[str] = []

    def refill(num_prompts: int) -> int:
        for _ in range(num_prompts):
            refilled.append(_put_group(partition, [0.0, 1.0, 0.5, 0.25]))
        return num_prompts

    flat = _put_group(partition, [1.0, 1.0, 1.0, 1.0])  # zero variance: evicted by DAPO, never down-sampled
    good = _put_group(partition, [0.0, 0.2, 0.9, 1.0])
    rb = PODSReplayBuffer(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=8,
        max_off_policy_strategy="drop",
        sampler_kwargs={"keep": 2, "filter_groups_metric": "reward", "train_batch_size": 2},
        poll_interval=POLL_INTERVAL,
        refill_fn=refill,
    )
    batch, metrics = rb.sample(global_steps=1, partition_id=partition, batch_size=2)
    uids = {k.split("_")[0] for k in batch.keys}
    # sync DAPO refills 2 prompts per evicted one, then discards the surplus: 2 of {good, refill 1, refill 2}
    assert flat not in uids and len(uids) == 2 and uids <= {good, *refilled} and len(refilled) == 2
    prefix = rb._metrics_prefix(partition)  # verl names only the exact "train" partition "training"
    assert metrics[f"{prefix}/filter_groups/evicted_samples"] == 1
    assert metrics[f"{prefix}/filter_groups/discarded_surplus_samples"] == 1
    assert metrics["pods/kept"] == 4 and metrics["pods/dropped"] == 4
    expected = {uid: {f"{uid}_0", f"{uid}_3"} if uid == good else {f"{uid}_0", f"{uid}_1"} for uid in uids}
    assert _sessions(batch.keys) == set().union(*expected.values())
    # evicted, surplus and dropped keys are all gone
    assert _stored(partition) == set(batch.keys)


def test_keep_per_group_handles_interleaved_ragged_groups() -> None:
    """Sessions of a prompt need not be adjacent or equally many; each group is selected on its own."""
    g = torch.Generator().manual_seed(0)
    sizes = [1, 2, 3, 4, 6, 8, 8, 5]
    group = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])  # (S,)
    group = group[torch.randperm(group.numel(), generator=g)]  # (S,) interleaved
    rewards = torch.rand(group.numel(), generator=g, dtype=torch.float64)  # (S,)
    kept = keep_per_group(rewards, torch.ones_like(rewards), group, 3, get_downsampler("max_variance"))
    for i, size in enumerate(sizes):
        members = torch.nonzero(group == i).squeeze(1)  # positions of group i, in batch order
        chosen = members[kept[members]]
        if size <= 3:
            assert torch.equal(chosen, members)
        else:
            expected = members[select_max_variance(rewards[members].unsqueeze(0), 3)[0]]
            assert torch.equal(chosen, expected)
