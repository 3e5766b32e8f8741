"""Prompt statuses written to TransferQueue together: one tag-only batch put per burst, not one put per prompt.

verl's ``AgentLoopWorkerTQ._run_prompt`` writes each prompt group's status with ``tq.async_kv_put(key=uid,
tag={"status": ...})``: ``running`` before its sessions start, then ``finished`` or ``failure``. Each such put
is two round trips to the TransferQueue controller (``kv_retrieve_meta``, then ``set_custom_meta``), and a
client sends them one after another. A demo step's 16 ``running`` puts took ~30 ms before the last group's
sessions could start, and its 16 terminal puts ~10 ms before the replay buffer could see the step finished.

:class:`BatchedStatuses` queues ``(key, partition, tag)`` and writes a burst with one
``tq.async_kv_batch_put(keys, partition_id, tags=...)`` per partition: the same two round trips, once. That
call merges each tag into the key's stored tags exactly as ``async_kv_put`` does (both go through
``BatchMeta.update_custom_meta`` and ``set_custom_meta``), so the controller ends with the same tags. Each
:meth:`BatchedStatuses.put` returns once its own write has landed (or raises what the write raised), so a
group's terminal status is still written after its data, and after its ``running`` status.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fspo_verl.agent_loop.bursts import QuietWindowBatches

#: quiet time that ends a burst of status writes (seconds). Our choice: the groups of one dispatch start in the
#: same event-loop pass, and the groups of one decoded batch settle within ~1 ms of each other; 1 ms of quiet
#: catches both and adds at most 1 ms to a status write.
STATUS_WINDOW_S = 0.001

#: most statuses in one write
STATUS_MAX_KEYS = 4096


def status_groups(items: list[tuple[str, str, dict]]) -> list[tuple[str, list[int]]]:
    """Split queued ``(key, partition, tag)`` into writes: ``(partition, [item indices])`` in first-seen order.

    A key queued twice in one burst goes into a later write than its first tag, so tags of one key land in
    the order they were queued (a batch put of one key twice would merge both into one update).
    """
    writes: list[tuple[str, list[int], set[str]]] = []
    last: dict[str, int] = {}  # partition -> index of its latest write
    for index, (key, partition, _) in enumerate(items):
        at = last.get(partition)
        if at is None or key in writes[at][2]:
            last[partition] = at = len(writes)
            writes.append((partition, [], set()))
        writes[at][1].append(index)
        writes[at][2].add(key)
    return [(partition, indices) for partition, indices, _ in writes]


class BatchedStatuses:
    """Prompt status tags written in bursts (see the module). ``batch_put`` defaults to ``tq.async_kv_batch_put``."""

    def __init__(self, window_s: float = STATUS_WINDOW_S, max_keys: int = STATUS_MAX_KEYS, batch_put: Any = None) -> None:
        self._batch_put = batch_put
        self._statuses = QuietWindowBatches(window_s, max_keys, self._write)
        self.writes = 0  # batch puts made (for tests and logs)

    async def put(self, key: str, partition_id: str, tag: dict[str, Any]) -> None:
        future = asyncio.get_running_loop().create_future()
        self._statuses.add((key, partition_id, dict(tag), future))
        await future

    async def _write(self, batch: list) -> None:
        if self._batch_put is None:
            import transfer_queue as tq

            self._batch_put = tq.async_kv_batch_put
        for partition_id, indices in status_groups([(key, partition, tag) for key, partition, tag, _ in batch]):
            items = [batch[i] for i in indices]
            try:
                await self._batch_put(keys=[item[0] for item in items], partition_id=partition_id,
                                      tags=[item[2] for item in items])
                self.writes += 1
            except Exception as err:  # noqa: BLE001 - delivered to each waiting put
                for *_, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            for *_, future in items:
                if not future.done():
                    future.set_result(None)
