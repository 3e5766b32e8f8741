"""How far one agent-loop worker's rollouts have got, so the replay buffer wakes when they are done.

verl's V1 replay buffer polls TransferQueue every ``trainer.v1.sampler.poll_interval`` seconds until enough
prompt groups carry a terminal status (:mod:`fspo_verl.downsampling.polling`). With the default 0.05 s, a demo step
waited ~25 ms on average after its last rollout, and polled ~10 times while the servers decoded, each poll a
``kv_list`` of every key in the controller and the driver's pass over it, on the cores the servers decode on.

The agent-loop worker knows when its prompts settle: it writes their terminal status itself. So
:class:`BatchedAgentLoopWorker <fspo_verl.agent_loop.manager.BatchedAgentLoopWorker>` keeps two counts:

- :class:`RolloutProgress`: prompt groups in flight and settled (terminal status written). Its
  :meth:`RolloutProgress.wait` returns once a group settled after the caller's last look *and* either no group
  is in flight or none has settled for :data:`SETTLE_QUIET_S` (a burst of groups settles within a few ms:
  one wake-up for the burst, not one per group), or at the timeout;
- :class:`GeneratingSessions`: agent-loop sessions registered (their prompt group has started) whose
  ``run`` has not returned. The coalescing client sends its queued requests as soon as every such session
  is waiting for generation, instead of waiting out its quiet window
  (:class:`~fspo_verl.agent_loop.manager.CoalescingLLMServerClient`).

On the driver, :class:`RolloutProgressWaiter` asks every worker (one Ray call each, ``wait_for_rollout_progress``)
and returns when the first answers; :func:`fspo_verl.downsampling.polling.wait_on_rollout_progress` makes the buffer wait
on it instead of sleeping. The buffer still re-reads TransferQueue after each wake-up and at least every
max(``poll_interval``, ``fspo_verl.downsampling.polling.PROGRESS_FALLBACK_S``): a wake-up only ends the sleep early, it
never decides what is sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from typing import Optional

logger = logging.getLogger(__name__)

#: quiet time after a prompt group settled, with other groups still in flight, before waiters are woken
#: (seconds). Our choice: the groups of one decoded batch settle within a few ms of each other (their
#: terminal statuses go out in one write), so 5 ms of quiet ends the burst and costs < 1% of a demo step.
SETTLE_QUIET_S = 0.005

#: extra seconds the driver gives a worker's answer beyond the wait's own timeout (a Ray round trip)
WAIT_GRACE_S = 1.0


class RolloutProgress:
    """Prompt groups of one agent-loop worker: how many are in flight, how many settled (monotonic).

    Used from the worker's event loop only: :meth:`start` when a group starts, :meth:`settle` once its terminal
    status is written (or its run failed), :meth:`wait` from the driver's Ray call.
    """

    def __init__(self, quiet_s: float = SETTLE_QUIET_S) -> None:
        self.quiet_s = float(quiet_s)
        self.in_flight = 0
        self.settled = 0
        self._last_settle = float("-inf")  # time.monotonic() of the last settle
        self._changed: Optional[asyncio.Event] = None

    def start(self) -> None:
        self.in_flight += 1

    def settle(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("RolloutProgress.settle() without a matching start()")
        self.in_flight -= 1
        self.settled += 1
        self._last_settle = time.monotonic()
        if self._changed is not None:
            self._changed.set()

    def _ready(self, seen: int) -> tuple[bool, float]:
        """(wake now, seconds until the quiet rule could wake) for a caller that last saw ``seen``."""
        if self.settled <= seen:
            return False, float("inf")
        if self.in_flight == 0:
            return True, 0.0
        left = self._last_settle + self.quiet_s - time.monotonic()
        return left <= 0, max(left, 0.0)

    async def wait(self, seen: Optional[int], timeout: float) -> int:
        """The settled count, once it exceeds ``seen`` and the worker is idle or quiet (see the module), or after
        ``timeout`` seconds. ``seen=None`` (a caller that has not looked yet) returns at once."""
        if seen is None:
            return self.settled
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = time.monotonic() + float(timeout)
        while True:
            ready, quiet_left = self._ready(seen)
            left = deadline - time.monotonic()
            if ready or left <= 0:
                return self.settled
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, quiet_left))
            except asyncio.TimeoutError:
                pass


class SessionTicket:
    """The sessions of one prompt group that have not finished generating; :meth:`close` releases the rest."""

    def __init__(self, gauge: "GeneratingSessions", sessions: int) -> None:
        self._gauge, self.remaining = gauge, int(sessions)
        gauge.generating += self.remaining

    def session_done(self) -> None:
        if self.remaining > 0:
            self.remaining -= 1
            self._gauge.generating -= 1

    def close(self) -> None:
        self._gauge.generating -= self.remaining
        self.remaining = 0


#: the ticket of the prompt group a session task belongs to (asyncio tasks copy the context they start in)
_CURRENT_TICKET: contextvars.ContextVar[Optional[SessionTicket]] = contextvars.ContextVar(
    "fspo_verl_session_ticket", default=None)


@contextlib.contextmanager
def tasks_of(ticket: SessionTicket):
    """Tasks created inside this block belong to ``ticket``'s prompt group (:func:`current_ticket` in them)."""
    token = _CURRENT_TICKET.set(ticket)
    try:
        yield ticket
    finally:
        _CURRENT_TICKET.reset(token)


def current_ticket() -> Optional[SessionTicket]:
    """The ticket of the prompt group the running task belongs to, or None outside one."""
    return _CURRENT_TICKET.get()


class GeneratingSessions:
    """How many agent-loop sessions of one worker may still ask for generation: those of started prompt groups
    whose ``run`` has not returned. A session counts from its group's start, before its task exists, so a
    burst is not cut short while some groups are still writing their ``running`` status."""

    def __init__(self) -> None:
        self.generating = 0

    def ticket(self, sessions: int) -> SessionTicket:
        return SessionTicket(self, sessions)


class RolloutProgressWaiter:
    """Driver side: wait until any agent-loop worker reports progress (see the module), or ``timeout``.

    ``workers`` is a callable returning the current worker handles (each with ``wait_for_rollout_progress``).
    A worker that fails to answer (e.g. it died) turns this into a plain sleep, with one warning.
    """

    def __init__(self, workers) -> None:
        self._workers = workers
        self._seen: dict[int, Optional[int]] = {}
        self._warned = False

    def wait(self, timeout: float) -> None:
        import ray

        start = time.monotonic()
        handles = list(self._workers() or [])
        if not handles:
            time.sleep(timeout)
            return
        refs = [h.wait_for_rollout_progress.remote(self._seen.get(i), timeout) for i, h in enumerate(handles)]
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout + WAIT_GRACE_S)
            for ref in ready:
                self._seen[refs.index(ref)] = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - the buffer must keep polling whatever a worker did
            if not self._warned:
                logger.warning("rollout progress unavailable (%s); the replay buffer polls on its interval", err)
                self._warned = True
            time.sleep(max(0.0, timeout - (time.monotonic() - start)))

    def __repr__(self) -> str:
        return f"RolloutProgressWaiter(seen={self._seen})"

