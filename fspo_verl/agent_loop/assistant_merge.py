"""The generated tokens appended to the prompt's in the agent loop itself, not through an executor thread.

After each generation, verl's ``SingleTurnAgentLoop.run`` calls ``AgentLoopBase.ct_merge_assistant_token``, which
runs ``continuous_token_builder.merge_assistant_tokens(runtime_token_ids, assistant_token_ids)`` with
``loop.run_in_executor`` and then aligns the response mask and log-probs. For verl's base
``ContinuousTokenBuilder`` that merge is a list concatenation (``list(runtime) + list(assistant)``), and the
executor round trip (a submit, a thread wake-up, a GIL hand-over and a ``call_soon_threadsafe`` back) is what
costs, 256 times per demo step (profile in ``docs/profiles.md``).

:func:`merge_inline` wraps one agent-loop instance's ``ct_merge_assistant_token``: when the instance's builder
uses the base class's ``merge_assistant_tokens`` (no model-specific override), the merge runs in the event loop
and the alignment is verl's own ``align_response_metadata``; the result is the same objects verl builds. A
builder that overrides the merge (it may re-tokenise at the junction) keeps verl's executor path.
"""

from __future__ import annotations

from typing import Any, Optional


def merges_by_concatenation(builder: Any) -> bool:
    """True when ``builder.merge_assistant_tokens`` is verl's base ``ContinuousTokenBuilder`` method."""
    from verl.utils.tokenizer.continuous_token import ContinuousTokenBuilder

    method = getattr(type(builder), "merge_assistant_tokens", None)
    return method is ContinuousTokenBuilder.merge_assistant_tokens


def merge_inline(agent_loop: Any) -> bool:
    """Replace ``agent_loop.ct_merge_assistant_token`` with an in-loop merge when its builder merges by
    concatenation (see the module). Returns whether it did."""
    builder = getattr(agent_loop, "continuous_token_builder", None)
    if builder is None or not merges_by_concatenation(builder):
        return False

    async def ct_merge_assistant_token(runtime_token_ids: list[int], assistant_token_ids: list[int],
                                       response_mask: list[int], response_logprobs: Optional[list[float]] = None,
                                       assistant_logprobs: Optional[list[float]] = None):
        merge_result = builder.merge_assistant_tokens(runtime_token_ids, assistant_token_ids)
        aligned_mask, aligned_logprobs = builder.align_response_metadata(
            merge_result, response_mask, response_logprobs, assistant_logprobs=assistant_logprobs)
        return merge_result, aligned_mask, aligned_logprobs

    agent_loop.ct_merge_assistant_token = ct_merge_assistant_token
    return True
