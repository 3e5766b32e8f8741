"""No 0.2-s garbage-collector pauses in the middle of a step: the start-up heap is frozen out of collection.

A process of the CPU pipeline holds ~1-2 million long-lived objects once it has imported verl, torch and
transformers and built its model or tokenizer. Python's full (generation-2) collection walks all of them:
in the demo each one paused its process for 0.18-0.27 s, a few times a minute per process. In the agent-loop
worker one such pause in the middle of a step's rollouts added ~0.2 s to that step's ``timing_s/gen``
(two of nine steps in one 10-step run).

:func:`freeze_startup_heap` collects once and then ``gc.freeze()``-s what survives: those objects move to the
permanent generation, which later collections skip, so a full collection walks only what was allocated since.
The frozen objects are the process's modules, model and tokenizer, which live as long as the process anyway;
anything among them that becomes garbage later is only reclaimed at exit, which costs a little memory at most.
vLLM and SGLang freeze their start-up heap in the same way.

Called at the end of :class:`~fspo_verl.agent_loop.manager.BatchedAgentLoopWorker`'s and
:class:`~fspo_verl.rollout_hf.server.HFRolloutServer`'s constructors, and in the driver when
:class:`~fspo_verl.cpu.agent_loop.BatchedAgentLoopManager` is built (after verl's trainer has initialised,
just before ``fit``).
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_heap(what: str) -> int:
    """Collect, then freeze every surviving object out of later collections; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("%s: %d start-up objects frozen out of garbage collection", what, frozen)
    return frozen
