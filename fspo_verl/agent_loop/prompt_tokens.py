"""One chat-template render per distinct prompt, shared by the ``rollout.n`` samples drawn from it.

verl's ``SingleTurnAgentLoop.run`` tokenises its prompt for every sample:
``AgentLoopBase.ct_build_initial_tokens(messages)`` renders the chat template and encodes it in an executor
thread. With ``rollout.n`` samples per prompt, the same tokens are built ``n`` times. The demo has n = 16
and 256 requests per step. There the renders held the GIL for ~0.2 s before the first request could be
sent, and they were the agent-loop worker's largest cost outside the TransferQueue write (py-spy).

:class:`PromptTokenCache` wraps one agent-loop instance's ``ct_build_initial_tokens``:

- Text-only calls (no images, videos or audios) with the same ``messages`` and ``tools`` share one build.
  Calls that arrive while that build runs await the same future, so the ``n`` concurrent samples of a
  prompt cost one render.
- Each caller gets its own copy of the token list (and of whatever the builder wrote to ``mm_inputs_out``).
- A build that raises fails every caller that waited for it, and is not kept.
- Multimodal calls, and messages that cannot be pickled into a key, go to verl's method unchanged.

The tokens are a pure function of (messages, tools) for a fixed tokenizer and ``rollout.prompt_length``: the
builder renders the template and ``_cap_text_prompt_length`` caps the result. Both are fixed for a worker's
life. A test compares the cached tokens with verl's for every prompt of both demo tasks.
"""

from __future__ import annotations

import asyncio
import pickle
from collections import OrderedDict
from typing import Any, Awaitable, Callable

#: distinct prompts remembered per agent-loop worker. Our choice: a few steps of a large batch (e.g. 512
#: prompts x 8 steps); the prompts of one step are what is shared, older ones are rarely drawn again soon.
MAX_PROMPTS = 4096


class PromptTokenCache:
    """A drop-in ``ct_build_initial_tokens(messages, tools=None, images=None, videos=None, audios=None,
    mm_inputs_out=None) -> list[int]`` that builds each distinct text-only prompt once (see the module)."""

    def __init__(self, build: Callable[..., Awaitable[list[int]]], max_prompts: int = MAX_PROMPTS) -> None:
        if max_prompts < 1:
            raise ValueError(f"max_prompts={max_prompts} must be >= 1")
        self._build = build
        self.max_prompts = int(max_prompts)
        self._tokens: OrderedDict[bytes, asyncio.Future] = OrderedDict()
        self.builds = 0  # how many times verl's builder ran (for tests and logs)

    async def __call__(self, messages: list[dict], tools: list[dict] | None = None, images: Any = None,
                       videos: Any = None, audios: Any = None, mm_inputs_out: dict | None = None) -> list[int]:
        key = None if (images or videos or audios) else _key(messages, tools)
        if key is None:
            self.builds += 1
            return await self._build(messages, tools=tools, images=images, videos=videos, audios=audios,
                                     mm_inputs_out=mm_inputs_out)
        future = self._tokens.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._remember(key, future)
            try:
                self.builds += 1
                built_mm: dict = {}
                tokens = await self._build(messages, tools=tools, mm_inputs_out=built_mm)
                future.set_result((list(tokens), built_mm))
            except asyncio.CancelledError:
                self._tokens.pop(key, None)
                future.cancel()
                raise
            except Exception as err:
                self._tokens.pop(key, None)
                future.set_exception(err)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
                raise
        else:
            self._tokens.move_to_end(key)
        tokens, built_mm = await asyncio.shield(future)
        if mm_inputs_out is not None:
            mm_inputs_out.update(built_mm)  # what the builder wrote (nothing, for a text-only builder)
        return list(tokens)

    def _remember(self, key: bytes, future: asyncio.Future) -> None:
        self._tokens[key] = future
        while len(self._tokens) > self.max_prompts:
            self._tokens.popitem(last=False)


def _key(messages: Any, tools: Any) -> bytes | None:
    try:
        return pickle.dumps((messages, tools), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an unpicklable prompt is built as verl builds it
        return None
