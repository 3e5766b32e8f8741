"""The hf rollout server's batching loop and batch recorder, on the server class without Ray.

``HFRolloutServer.__init__`` needs verl's config dataclasses and a checkpoint; these tests set only the
attributes the batching loop and the recorder read.
"""

from __future__ import annotations

import asyncio
import json

from _hf_server import bare_server

import fspo_verl.rollout_hf.server as hf_server
from fspo_verl.rollout_hf.generation import SamplingSpec
from fspo_verl.rollout_hf.server import HFRolloutServer


def _server() -> HFRolloutServer:
    server = object.__new__(HFRolloutServer)
    server._queue = asyncio.Queue()
    return server


async def _feed(queue: asyncio.Queue, schedule: list[tuple[float, int]]) -> None:
    for delay, item in schedule:
        await asyncio.sleep(delay)
        queue.put_nowait(item)


def test_requests_within_the_window_share_a_batch_and_later_ones_start_the_next(monkeypatch) -> None:
    monkeypatch.setattr(hf_server, "BATCH_WINDOW_S", 0.2)

    async def scenario():
        server = _server()
        # 1 and 2 arrive 20 ms apart (inside the window); 3 arrives 0.5 s after 2 (outside it)
        feeder = asyncio.create_task(_feed(server._queue, [(0.0, 1), (0.02, 2), (0.5, 3)]))
        first = await server._collect_batch()
        second = await server._collect_batch()
        await feeder
        return first, second, server._queue.qsize()

    first, second, left = asyncio.run(scenario())
    assert first == [1, 2]
    assert second == [3]
    assert left == 0  # nothing lost to the cancelled get


def test_a_full_batch_does_not_wait_for_the_window(monkeypatch) -> None:
    monkeypatch.setattr(hf_server, "BATCH_WINDOW_S", 30.0)  # would time the test out if waited for
    monkeypatch.setattr(hf_server, "MAX_BATCH_SIZE", 3)

    async def scenario():
        server = _server()
        for item in range(5):
            server._queue.put_nowait(item)
        batch = await asyncio.wait_for(server._collect_batch(), 5)
        return batch, server._queue.qsize()

    batch, left = asyncio.run(scenario())
    assert batch == [0, 1, 2]
    assert left == 2


def test_batch_recorder_writes_one_line_per_batch(tmp_path, monkeypatch) -> None:
    server = bare_server(replica_rank=1, global_steps=7)
    items = [([3, 4, 5], 4, SamplingSpec(), None), ([6, 7], 2, SamplingSpec(), None)]

    monkeypatch.delenv(hf_server.TIMING_DIR_ENV, raising=False)
    server._run_batch(SamplingSpec(), items)
    assert not list(tmp_path.iterdir())  # off unless the variable is set

    monkeypatch.setenv(hf_server.TIMING_DIR_ENV, str(tmp_path))
    results = server._run_batch(SamplingSpec(), items)
    lines = (tmp_path / "replica1.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["global_steps"] == 7 and record["prompts"] == [[3, 4, 5], [6, 7]]
    assert record["max_tokens"] == [4, 2]
    assert record["response_lens"] == [len(ids) for ids, _ in results]
    assert record["seconds"] > 0
