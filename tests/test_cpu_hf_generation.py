"""Batched sampling of the hf rollout against a teacher-forced forward pass of the same model."""

from __future__ import annotations

import pytest
import torch

from fspo_verl.demo.model import build_model, build_tokenizer
from fspo_verl.rollout_hf.generation import (
    SamplingSpec,
    _filter_top_k_top_p,
    generate_batch,
)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=3)
    model.config._attn_implementation = "sdpa"
    return model.eval(), tokenizer


PROMPTS = [[3, 4, 5], [7, 8, 9, 10, 11], [5]]


def teacher_forced_logp(model, prompt, response, temperature):
    ids = torch.tensor([prompt + response])  # (1, P+R)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()  # (R, V)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (R, V)
    return logp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)  # (R,)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_log_probs_match_teacher_forcing(model_and_tokenizer, temperature):
    model, tok = model_and_tokenizer
    spec = SamplingSpec(temperature=temperature)
    out = generate_batch(model, PROMPTS, [6, 6, 6], spec, {tok.eos_token_id}, tok.pad_token_id, torch.Generator().manual_seed(0))
    for prompt, (response, logps) in zip(PROMPTS, out):
        assert 1 <= len(response) <= 6 and len(logps) == len(response)
        expected = teacher_forced_logp(model, prompt, response, temperature or 1.0)
        torch.testing.assert_close(torch.tensor(logps), expected, atol=1e-5, rtol=0)


def test_batched_greedy_equals_one_by_one(model_and_tokenizer):
    model, tok = model_and_tokenizer
    spec = SamplingSpec(temperature=0.0)
    batched = generate_batch(model, PROMPTS, [5, 5, 5], spec, {tok.eos_token_id}, tok.pad_token_id)
    single = [generate_batch(model, [p], [5], spec, {tok.eos_token_id}, tok.pad_token_id)[0] for p in PROMPTS]
    for (b_ids, b_lp), (s_ids, s_lp) in zip(batched, single):
        assert b_ids == s_ids  # left padding and position ids do not change the result
        torch.testing.assert_close(torch.tensor(b_lp), torch.tensor(s_lp), atol=1e-5, rtol=0)


def _teacher_forced_with_penalty(model, prompt, response, temperature, penalty):
    """(R,) log-probs of ``response`` from one full forward pass, with vLLM's repetition penalty on the tokens
    of the prompt and of the response so far (the reference the batched decoder must match)."""
    ids = torch.tensor([prompt + response])  # (1, P+R)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()  # (R, V)
    out = []
    for t, token in enumerate(response):
        z = logits[t]  # (V,)
        seen = torch.zeros_like(z, dtype=torch.bool)  # (V,)
        seen[torch.tensor(prompt + response[:t])] = True
        z = torch.where(seen, torch.where(z > 0, z / penalty, z * penalty), z)  # (V,)
        out.append(torch.log_softmax(z / temperature, dim=-1)[token])
    return torch.stack(out)  # (R,)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_rows_that_finish_leave_the_batch_without_changing_the_others(model_and_tokenizer, penalty):
    """Finished rows are dropped from the batch (and their KV cache) as they finish: rows of 0, 1, 3, 7 and 12
    tokens (EOS disabled) each get exactly their length, and every token's log-prob equals a teacher-forced
    pass over that row alone, before and after the rows next to it left."""
    model, tok = model_and_tokenizer
    prompts = [[3, 4, 5], [7, 8, 9, 10, 11], [5], [6, 6], [12, 3, 9, 4]]
    lengths = [7, 1, 12, 0, 3]
    spec = SamplingSpec(temperature=0.9, repetition_penalty=penalty)
    out = generate_batch(model, prompts, lengths, spec, {-1}, tok.pad_token_id, torch.Generator().manual_seed(2))
    assert [len(ids) for ids, _ in out] == lengths
    assert [len(lp) for _, lp in out] == lengths
    for prompt, (response, logps) in zip(prompts, out):
        if response:
            expected = _teacher_forced_with_penalty(model, prompt, response, 0.9, penalty)
            torch.testing.assert_close(torch.tensor(logps), expected, atol=1e-5, rtol=0)
    # greedy with unequal lengths: each row's tokens are those it decodes alone
    greedy = generate_batch(model, prompts, lengths, SamplingSpec(temperature=0.0), {-1}, tok.pad_token_id)
    for prompt, n, (ids, _) in zip(prompts, lengths, greedy):
        alone = generate_batch(model, [prompt], [n], SamplingSpec(temperature=0.0), {-1}, tok.pad_token_id)[0][0]
        assert ids == alone


def test_eos_stops_and_is_kept_and_max_tokens_is_per_request(model_and_tokenizer):
    model, tok = model_and_tokenizer
    eos = tok.eos_token_id
    spec = SamplingSpec(temperature=0.0)
    first = generate_batch(model, [PROMPTS[0]], [1], spec, {eos}, tok.pad_token_id)[0][0][0]
    # treat the first greedy token as EOS: generation must stop right after it, keeping it
    out = generate_batch(model, [PROMPTS[0], PROMPTS[1]], [4, 2], spec, {first}, tok.pad_token_id)
    assert out[0][0] == [first]
    assert len(out[1][0]) <= 2


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])  # (1, 4)
    assert torch.isfinite(_filter_top_k_top_p(logits, top_k=2, top_p=1.0)).tolist() == [[True, True, False, False]]
    probs = torch.softmax(logits, -1)[0]
    # nucleus: smallest prefix with mass >= p; p just above the best token's mass keeps two tokens
    kept = torch.isfinite(_filter_top_k_top_p(logits, top_k=-1, top_p=float(probs[0]) + 1e-3))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(_filter_top_k_top_p(logits, top_k=-1, top_p=1.0)).all()


def test_top_k_one_is_greedy(model_and_tokenizer):
    model, tok = model_and_tokenizer
    greedy = generate_batch(model, PROMPTS, [4] * 3, SamplingSpec(temperature=0.0), {tok.eos_token_id}, tok.pad_token_id)
    top1 = generate_batch(
        model, PROMPTS, [4] * 3, SamplingSpec(temperature=1.0, top_k=1), {tok.eos_token_id}, tok.pad_token_id,
        torch.Generator().manual_seed(1),
    )
    assert [ids for ids, _ in greedy] == [ids for ids, _ in top1]
