"""Bursts of items handed on together: the collector behind the agent-loop worker's batched calls and writes."""

from __future__ import annotations

import asyncio
from typing import Any, Optional


class QuietWindowBatches:
    """Collects items and hands them on in bursts: a burst ends once no item has arrived for ``window_s``
    seconds, when ``limit`` items wait, or when :meth:`flush_now` is called. ``handle(batch)`` (a coroutine
    function) gets each burst in order; the next burst is collected while it runs. The asyncio state is
    created in the loop of the first :meth:`add`."""

    def __init__(self, window_s: float, limit: int, handle) -> None:
        if window_s <= 0 or limit < 1:
            raise ValueError(f"window_s={window_s} must be > 0 and limit={limit} >= 1")
        self.window_s, self.limit, self._handle = float(window_s), int(limit), handle
        self._pending: list = []
        self._arrived: Optional[asyncio.Event] = None
        self._flush: Optional[asyncio.Event] = None  # set: end the burst being collected now
        self._flusher: Optional[asyncio.Task] = None

    def __len__(self) -> int:
        """Items waiting (not yet handed on)."""
        return len(self._pending)

    def add(self, item: Any) -> None:
        self._pending.append(item)
        if self._arrived is None:
            self._arrived, self._flush = asyncio.Event(), asyncio.Event()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        self._arrived.set()

    def flush_now(self) -> None:
        """End the burst being collected without waiting out the window (no-op when nothing waits)."""
        if self._pending and self._flush is not None:
            self._flush.set()

    async def _flush_loop(self) -> None:
        assert self._arrived is not None and self._flush is not None
        while True:
            await self._arrived.wait()
            seen = -1
            while len(self._pending) != seen and len(self._pending) < self.limit and not self._flush.is_set():
                seen = len(self._pending)
                try:  # quiet for window_s: the burst is over
                    await asyncio.wait_for(self._flush.wait(), self.window_s)
                except asyncio.TimeoutError:
                    pass
            self._flush.clear()
            batch, self._pending = self._pending[: self.limit], self._pending[self.limit :]
            if not self._pending:
                self._arrived.clear()
            if batch:
                await self._handle(batch)
