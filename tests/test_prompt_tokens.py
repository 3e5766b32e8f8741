"""PromptTokenCache (fspo_verl.agent_loop.prompt_tokens): one build per distinct text-only prompt.

The builder here records its calls. verl's real builder, on every prompt of both demo tasks, is in
tests/test_cpu_demo.py (``test_the_shared_agent_loop_builds_each_prompt_once_with_verls_tokens``).
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fspo_verl.agent_loop.prompt_tokens import PromptTokenCache


class RecordingBuilder:
    """``ct_build_initial_tokens``: the tokens are the characters' code points; each build takes a loop turn."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on

    async def __call__(self, messages, tools=None, images=None, videos=None, audios=None, mm_inputs_out=None):
        text = messages[-1]["content"]
        self.calls.append(text)
        await asyncio.sleep(0.01)  # the real build runs in an executor: other samples arrive meanwhile
        if text == self.fail_on:
            raise ValueError(f"cannot render {text!r}")
        if images:
            mm_inputs_out["pixel_values"] = "pixels"
        return [ord(c) for c in text]


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_n_concurrent_samples_of_a_prompt_cost_one_build_and_get_their_own_lists() -> None:
    builder = RecordingBuilder()
    cache = PromptTokenCache(builder)

    async def step():
        return await asyncio.gather(*(cache(_messages(text)) for text in ["ab", "c"] * 4))

    results = asyncio.run(step())
    assert results == [[97, 98], [99]] * 4  # by hand: ord("a"), ord("b"); ord("c")
    assert builder.calls == ["ab", "c"] and cache.builds == 2
    results[0].append(0)  # a caller's list is its own
    assert results[2] == [97, 98]


def test_the_same_prompt_in_a_later_step_is_not_rebuilt_and_the_oldest_prompt_is_evicted() -> None:
    builder = RecordingBuilder()
    cache = PromptTokenCache(builder, max_prompts=2)

    async def steps():
        await cache(_messages("a"))
        await cache(_messages("b"))
        await cache(_messages("a"))  # "a" is now the most recent
        await cache(_messages("c"))  # evicts "b"
        await cache(_messages("a"))
        await cache(_messages("b"))

    asyncio.run(steps())
    assert builder.calls == ["a", "b", "c", "b"]


def test_tools_are_part_of_the_prompt() -> None:
    builder = RecordingBuilder()
    cache = PromptTokenCache(builder)

    async def calls():
        await cache(_messages("a"))
        await cache(_messages("a"), tools=[{"name": "calc"}])

    asyncio.run(calls())
    assert builder.calls == ["a", "a"]


def test_multimodal_prompts_go_to_verls_builder_every_time() -> None:
    builder = RecordingBuilder()
    cache = PromptTokenCache(builder)

    async def calls():
        outs = [{}, {}]
        for out in outs:
            assert await cache(_messages("a"), images=["img"], mm_inputs_out=out) == [97]
        return outs

    assert asyncio.run(calls()) == [{"pixel_values": "pixels"}] * 2
    assert builder.calls == ["a", "a"]


def test_a_failed_build_fails_every_waiting_sample_and_is_not_kept() -> None:
    builder = RecordingBuilder(fail_on="bad")
    cache = PromptTokenCache(builder)

    async def step():
        return await asyncio.gather(*(cache(_messages("bad")) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(step())
    assert all(isinstance(r, ValueError) and "cannot render 'bad'" in str(r) for r in results)
    assert builder.calls == ["bad"]
    with pytest.raises(ValueError):
        asyncio.run(cache(_messages("bad")))  # tried again, not served from a cached failure
    assert builder.calls == ["bad", "bad"]


def test_an_unpicklable_prompt_is_built_as_verl_builds_it() -> None:
    builder = RecordingBuilder()
    cache = PromptTokenCache(builder)
    messages = [{"role": "user", "content": "a", "hook": lambda: None}]  # a lambda cannot be pickled

    async def calls():
        await cache(messages)
        await cache(messages)

    asyncio.run(calls())
    assert builder.calls == ["a", "a"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=24))
def test_any_burst_gives_each_sample_its_own_prompts_tokens_with_one_build_per_distinct_prompt(texts) -> None:
    builder = RecordingBuilder()
    cache = PromptTokenCache(builder)

    async def step():
        return await asyncio.gather(*(cache(_messages(text)) for text in texts))

    assert asyncio.run(step()) == [[ord(c) for c in text] for text in texts]
    assert sorted(builder.calls) == sorted(set(texts))
