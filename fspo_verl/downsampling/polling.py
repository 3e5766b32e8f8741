"""How often verl's V1 replay buffers look for finished rollouts: ``trainer.v1.sampler.poll_interval``.

verl 0.9.1's ``ReplayBuffer.sample`` (and ``ReplayBufferAsync.wait_for_sampleable``) loops: list
TransferQueue's tags, select a batch if enough prompt groups are finished, else ``time.sleep(poll_interval)``.
The constructor takes ``poll_interval`` (default 2.0 s) but the trainer (``PPOTrainer._build_replay_buffer``)
never passes it, so every sync step waits for its rollouts in 2-second quanta: a step whose rollouts take
0.3 s spends 2 s in ``timing_s/gen``, on a laptop and on a GPU cluster alike.

verl's own agent-loop workers publish a prompt's ``finished`` status only as a TransferQueue tag
(``tq.async_kv_put`` in ``agent_loop_tq.py``), and TransferQueue's key-value API has no blocking wait on a
tag. So with them the buffer keeps polling, but with a short interval that is a setting:

- ``trainer.v1.sampler.poll_interval`` (seconds, ``0 < value <= MAX_POLL_INTERVAL_S``): read from the
  trainer config by a wrapper around ``PPOTrainer._build_replay_buffer`` (installed on import of verl's
  trainer module, in every process, by :func:`register`) and set on whatever buffer verl built: its own
  ``ReplayBuffer``/``ReplayBufferAsync`` (DAPO wiring untouched), PODS's, or any custom subclass. Absent
  key: verl's own default stays (plain verl runs are unchanged unless they add
  ``+trainer.v1.sampler.poll_interval=...``). Our root config sets :data:`DEFAULT_POLL_INTERVAL_S`, so every
  ``fspo-verl`` preset gets it.
- PODS's buffers (``fspo_verl.downsampling.replay_buffer``) default to :data:`DEFAULT_POLL_INTERVAL_S` themselves, so they are fast
  even when selected by hand on verl's own entry point.

Where the agent-loop manager can tell when rollouts settle (it has a ``rollout_progress_waiter()``, as
``cluster=cpu``'s :class:`~fspo_verl.cpu.agent_loop.BatchedAgentLoopManager` does), the buffer waits on that
instead of sleeping (:func:`wait_on_rollout_progress`, installed when ``PPOTrainer.fit`` gets the manager):
it wakes as soon as a worker's prompt groups settle, and otherwise after max(``poll_interval``,
:data:`PROGRESS_FALLBACK_S`). Each
wake-up is followed by the buffer's own TransferQueue read, so what is sampled is decided as before.

``separate_async`` with ``hybrid_rollout.enable_switch`` also reads ``poll_interval`` as its "the step
waited for rollouts" threshold; a short interval makes that detector more sensitive, which is what it means.
"""

from __future__ import annotations

import functools
import math
import time
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from fspo_verl.common.verl_internals import is_patched, patch_once
from fspo_verl.common.config_lookup import config_value

POLL_INTERVAL_KEY = "trainer.v1.sampler.poll_interval"

#: Our choice: 0.05 s. A step then waits at most 50 ms after its last rollout finished (< 2% of a 3-s CPU demo
#: step, negligible on a GPU step), while each poll (one ``kv_list`` round trip to TransferQueue's controller,
#: a few ms for a demo step's ~600 keys) costs at most ~10% of one core during generation.
DEFAULT_POLL_INTERVAL_S = 0.05

#: Largest accepted value. Our choice: beyond a minute the buffer would idle longer than any step it waits
#: for; verl's own default (2.0) is well inside.
MAX_POLL_INTERVAL_S = 60.0


def poll_interval_error(value: Any) -> str | None:
    """One-line message (key, value, fix) if ``value`` is not a valid poll interval, else None."""
    fix = f"set {POLL_INTERVAL_KEY}={DEFAULT_POLL_INTERVAL_S} (seconds, 0 < value <= {MAX_POLL_INTERVAL_S:g})"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{POLL_INTERVAL_KEY}={value!r} is not a number of seconds; {fix}."
    if not math.isfinite(value) or value <= 0:
        return (f"{POLL_INTERVAL_KEY}={value!r} would make the replay buffer poll TransferQueue in a busy loop "
                f"(or never); {fix}.")
    if value > MAX_POLL_INTERVAL_S:
        return f"{POLL_INTERVAL_KEY}={value!r} would leave each step idle up to {value:g} s after its rollouts; {fix}."
    return None


def configured_poll_interval(config: DictConfig) -> float | None:
    """The poll interval a composed/trainer config asks for (None: keep the buffer's own); raises ValueError."""
    value = config_value(config, POLL_INTERVAL_KEY)
    if value is None:
        return None
    error = poll_interval_error(value)
    if error:
        raise ValueError(error)
    return float(value)


def _hook_trainer(trainer_base: ModuleType) -> None:
    """Wrap ``PPOTrainer._build_replay_buffer``: set the configured ``poll_interval`` on the built buffer."""
    trainer_cls = trainer_base.PPOTrainer
    original = trainer_cls._build_replay_buffer
    if is_patched(original):
        return

    @functools.wraps(original)
    def _build_replay_buffer(self):
        buffer = original(self)
        interval = configured_poll_interval(self.config)
        if interval is not None:
            buffer.poll_interval = interval
        return buffer

    patch_once(trainer_cls, "_build_replay_buffer", lambda _verls: _build_replay_buffer)
    _hook_fit(trainer_cls)


#: with a rollout-progress waiter, the longest the buffer waits between its own TransferQueue reads (seconds).
#: Our choice: a settle wakes the buffer at once, so a read in between only finds what it found before; 1 s
#: bounds the cost of a wake-up that never comes (a worker that died, a status written by someone else).
PROGRESS_FALLBACK_S = 1.0


def wait_on_rollout_progress(buffer: Any, waiter: Any) -> None:
    """Make ``buffer`` (a V1 replay buffer) wait between polls on ``waiter.wait(timeout)`` instead of
    ``time.sleep(poll_interval)``; verl's periodic state log (``_wait_for_next_poll``) is kept."""
    from verl.trainer.ppo.v1 import replay_buffer as verl_buffer

    logger = verl_buffer.logger

    def _wait_for_next_poll(partition_id: str, last_debug_time: float) -> float:
        waiter.wait(max(buffer.poll_interval, PROGRESS_FALLBACK_S))
        now = time.time()
        if now - last_debug_time > verl_buffer.VERL_REPLAY_BUFFER_DEBUG_INTERVAL_SECONDS:
            logger.info(f"pending: {len(buffer.pending_keys[partition_id])}, "
                        f"running: {len(buffer.running_keys[partition_id])}, "
                        f"finished: {len(buffer.finished_keys[partition_id])}, "
                        f"failure: {len(buffer.failure_keys[partition_id])}")
            return now
        return last_debug_time

    buffer._wait_for_next_poll = _wait_for_next_poll
    buffer.rollout_progress_waiter = waiter


def _hook_fit(trainer_cls: type) -> None:
    """Wrap ``PPOTrainer.fit(agent_loop_manager)``: a manager that offers a rollout-progress waiter gets the
    trainer's replay buffer waiting on it (:func:`wait_on_rollout_progress`)."""
    original = trainer_cls.fit
    if is_patched(original):
        return

    @functools.wraps(original)
    def fit(self, agent_loop_manager, *args, **kwargs):
        offer = getattr(agent_loop_manager, "rollout_progress_waiter", None)
        buffer = getattr(self, "replay_buffer", None)
        if callable(offer) and buffer is not None:
            wait_on_rollout_progress(buffer, offer())
        return original(self, agent_loop_manager, *args, **kwargs)

    patch_once(trainer_cls, "fit", lambda _verls: fit)


def register() -> None:
    """Install the wrapper when verl's V1 trainer module is imported (at once if it already is)."""
    from fspo_verl.common.import_hooks import when_imported

    when_imported("verl.trainer.ppo.v1.trainer_base", _hook_trainer)
