"""The agent-loop worker's rollout progress, batched status writes, in-loop assistant merge and burst flush
(fspo_verl.agent_loop.rollout_progress, status_writes, assistant_merge, bursts)."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from fspo_verl.agent_loop.bursts import QuietWindowBatches
from fspo_verl.agent_loop.rollout_progress import (
    GeneratingSessions,
    RolloutProgress,
    current_ticket,
    tasks_of,
)
from fspo_verl.agent_loop.status_writes import BatchedStatuses, status_groups

#: the timeout of the waits below: a wake-up on progress must come well before it. Long, so that a busy machine
#: (a waiter scheduled late) cannot be mistaken for a wait that ran to its timeout.
WAIT_S = 30.0


def test_status_groups_by_hand() -> None:
    items = [("a", "train", {}), ("b", "val", {}), ("c", "train", {}), ("a", "train", {}), ("d", "train", {})]
    # "a" again must land after its first tag: a new train write, which "d" then joins
    assert status_groups(items) == [("train", [0, 2]), ("val", [1]), ("train", [3, 4])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["train", "val"])), max_size=12))
def test_status_groups_keep_each_keys_tags_in_order_and_lose_none(pairs) -> None:
    items = [(key, partition, {"i": i}) for i, (key, partition) in enumerate(pairs)]
    writes = status_groups(items)
    assert sorted(i for _, indices in writes for i in indices) == list(range(len(items)))
    position = {}
    for w, (partition, indices) in enumerate(writes):
        keys = [items[i][0] for i in indices]
        assert len(keys) == len(set(keys))  # one tag per key per write
        assert all(items[i][1] == partition for i in indices)
        for i in indices:
            position[i] = w
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if items[i][0] == items[j][0] and items[i][1] == items[j][1]:
                assert position[i] < position[j]


def test_batched_statuses_write_a_burst_once_and_fail_each_waiter_of_a_failed_write() -> None:
    calls = []

    async def batch_put(keys, partition_id, tags):
        calls.append((list(keys), partition_id, list(tags)))
        if partition_id == "val":
            raise RuntimeError("controller down")

    async def main():
        statuses = BatchedStatuses(batch_put=batch_put)
        results = await asyncio.gather(*(statuses.put(f"u{i}", "train", {"status": "running"}) for i in range(16)),
                                       statuses.put("v0", "val", {"status": "running"}), return_exceptions=True)
        return statuses.writes, results

    writes, results = asyncio.run(main())
    assert writes == 1 and calls[0] == ([f"u{i}" for i in range(16)], "train", [{"status": "running"}] * 16)
    assert calls[1][1] == "val" and results[:16] == [None] * 16 and isinstance(results[16], RuntimeError)


def test_progress_wakes_when_the_worker_is_idle_not_at_the_timeout() -> None:
    async def main():
        progress = RolloutProgress()
        seen = await progress.wait(None, WAIT_S)  # a first look returns at once
        for _ in range(3):
            progress.start()

        async def settle_later():
            await asyncio.sleep(0.05)
            for _ in range(3):
                progress.settle()

        task = asyncio.create_task(settle_later())
        start = time.monotonic()
        settled = await progress.wait(seen, WAIT_S)
        await task
        return seen, settled, time.monotonic() - start

    seen, settled, waited = asyncio.run(main())
    assert (seen, settled) == (0, 3)
    assert 0.04 <= waited < WAIT_S / 2  # woke on the settles, not at the timeout


def test_progress_waits_out_a_burst_while_groups_are_in_flight_and_times_out_without_progress() -> None:
    async def main():
        progress = RolloutProgress(quiet_s=0.05)
        progress.start(), progress.start()
        progress.settle()  # one group settled, one still in flight: the quiet rule applies
        start = time.monotonic()
        first = await progress.wait(0, WAIT_S)
        quiet = time.monotonic() - start
        start = time.monotonic()
        second = await progress.wait(first, 0.1)  # nothing settles: the timeout
        return first, quiet, second, time.monotonic() - start

    first, quiet, second, timed_out = asyncio.run(main())
    assert first == 1 and second == 1
    assert 0.0 <= quiet < WAIT_S / 2 and 0.09 <= timed_out < WAIT_S / 2


def test_session_tickets_count_sessions_until_they_finish_or_their_group_closes() -> None:
    async def main():
        gauge = GeneratingSessions()
        ticket = gauge.ticket(4)
        assert gauge.generating == 4

        async def session():
            assert current_ticket() is ticket
            current_ticket().session_done()

        with tasks_of(ticket):
            tasks = [asyncio.create_task(session()) for _ in range(3)]
        assert current_ticket() is None
        await asyncio.gather(*tasks)
        assert gauge.generating == 1
        ticket.close()  # the fourth session never ran
        ticket.session_done()  # no double count
        return gauge.generating

    assert asyncio.run(main()) == 0


def test_flush_now_ends_a_burst_without_waiting_out_the_window() -> None:
    async def main():
        got = []

        async def handle(batch):
            got.append((list(batch), time.monotonic()))

        bursts = QuietWindowBatches(WAIT_S, 100, handle)
        start = time.monotonic()
        for i in range(3):
            bursts.add(i)
        bursts.flush_now()
        while not got:
            await asyncio.sleep(0.01)
        return got, start

    got, start = asyncio.run(main())
    assert got[0][0] == [0, 1, 2] and got[0][1] - start < WAIT_S / 2  # not at the end of the window


def test_the_in_loop_merge_equals_verls_merge(tmp_path) -> None:
    """merge_inline's ct_merge_assistant_token returns what verl's executor path returns, with and without
    log-probs, on a real SingleTurnAgentLoop's builder."""
    from verl.utils.tokenizer.continuous_token import ContinuousTokenBuilder

    from fspo_verl.agent_loop.assistant_merge import (
        merge_inline,
        merges_by_concatenation,
    )

    class Loop:  # the two attributes verl's ct_merge_assistant_token uses
        def __init__(self, builder):
            self.continuous_token_builder = builder
            self.loop = None

    from verl.experimental.agent_loop.agent_loop import AgentLoopBase

    builder = ContinuousTokenBuilder.__new__(ContinuousTokenBuilder)  # merge/align read no tokenizer state
    assert merges_by_concatenation(builder)

    async def both(args):
        verl_loop = Loop(builder)
        verl_loop.loop = asyncio.get_running_loop()
        theirs = await AgentLoopBase.ct_merge_assistant_token(verl_loop, *args[:4], assistant_logprobs=args[4])
        ours_loop = Loop(builder)
        assert merge_inline(ours_loop)
        ours = await ours_loop.ct_merge_assistant_token(*args[:4], assistant_logprobs=args[4])
        return theirs, ours

    for args in ([[1, 2, 3], [7, 8], [], None, None], [[5], [9, 9, 4], [], [], [-0.5, -1.0, -2.0]]):
        theirs, ours = asyncio.run(both(args))
        assert ours[0] == theirs[0] and ours[1] == theirs[1] and ours[2] == theirs[2]

    class Override(ContinuousTokenBuilder):
        def merge_assistant_tokens(self, runtime_token_ids, assistant_token_ids):
            return super().merge_assistant_tokens(runtime_token_ids, assistant_token_ids)

    assert not merge_inline(Loop(Override.__new__(Override)))  # an override keeps verl's executor path
