"""Batched token-in/token-out sampling with a Hugging Face causal LM (CPU or GPU), with vLLM's sampling contract.

Used by the ``hf`` rollout server (:mod:`fspo_verl.rollout_hf.server`). Pure torch, no Ray, so it is tested
directly against a teacher-forced forward pass.

Contract (same as verl's vLLM server ``generate``):
- input: prompt token ids (no padding), per-request ``max_tokens``, and sampling params ``temperature``,
  ``top_p``, ``top_k`` (-1 or 0 = off) and ``repetition_penalty`` (1.0 = off);
- output per request: response token ids (EOS kept when produced) and the log-probability of each sampled
  token under the *temperature-scaled* full-vocabulary distribution,
  ``log softmax(z_t / T)[y_t]`` (z_t: logits after the repetition penalty), which is what verl's actor
  computes (``logprobs_from_logits(logits / temperature)``), so ``rollout_probs_diff`` compares like with
  like. Greedy decoding (``temperature == 0``) reports log-probs at T = 1.
Top-k/top-p only restrict which tokens can be *sampled*; they do not renormalise the reported log-prob.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingSpec:
    """The sampling parameters one batch shares; requests with different specs are batched separately."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0

    @classmethod
    def from_params(cls, params: dict) -> "SamplingSpec":
        top_k = params.get("top_k", -1)
        return cls(
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            top_k=-1 if top_k is None else int(top_k),
            repetition_penalty=float(params.get("repetition_penalty", 1.0) or 1.0),
        )


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty (arXiv 1909.05858), as vLLM applies it: z/p for z > 0, z*p for z <= 0, on seen ids.

    logits: (B, V); seen: (B, V) bool, tokens in the prompt or generated so far.
    """
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(seen, penalised, logits)  # (B, V)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) tokens outside the top-k and outside the smallest nucleus with mass >= top_p.

    logits: (B, V) temperature-scaled. Returns (B, V).
    """
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)  # (B, V), (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)  # (B, V)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, V) mass of strictly better tokens
        drop_sorted = mass_before >= top_p  # (B, V); the best token is always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)  # (B, V)
        logits = logits.masked_fill(drop, float("-inf"))  # (B, V)
    return logits


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_tokens: list[int],
    spec: SamplingSpec,
    eos_token_ids: set[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], list[float]]]:
    """Sample a response for each prompt; returns ``[(response_ids, log_probs)]`` in prompt order.

    Prompts are left-padded into one batch (B, P) with an attention mask and explicit position ids, and
    decoded with the model's KV cache. Row b stops at an EOS token (kept) or after ``max_tokens[b]`` tokens.

    Finished rows leave the batch: after each decode step that finishes a row, the active rows' KV cache,
    mask and positions are selected (``Cache.batch_select_indices``), so a step costs what its A <= B
    unfinished rows need, not what the longest response's batch did. Each row's computation depends only on
    its own tokens (its mask hides the others), so dropping rows does not change the survivors' log-probs
    beyond float rounding (tested against teacher forcing); the random draws of ``torch.multinomial`` are
    consumed per active row. On the demo's countdown batches (128 responses of 2-160 tokens) this decodes
    about 3x faster than keeping every row to the end (``benchmarks/bench_step_time.py``).

    Device-agnostic: everything lives on the model's device (``generator`` must be on it too), and each decode
    step reads back to the host once (the step's tokens, log-probs and finished flags together), so on a GPU
    the host waits for the device once per step, not once per quantity.
    """
    device = next(model.parameters()).device
    batch, longest = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((batch, longest), pad_token_id, dtype=torch.long)  # (B, P) built on the host
    attention_mask = torch.zeros((batch, longest), dtype=torch.long)  # (B, P)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, longest - len(prompt) :] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)  # one copy each
    limits = torch.tensor(max_tokens, dtype=torch.long, device=device)  # (B,)
    vocab = model.get_output_embeddings().weight.shape[0]
    penalise = spec.repetition_penalty != 1.0
    seen = torch.zeros((batch, vocab), dtype=torch.bool, device=device)  # (B, V)
    if penalise:
        seen.scatter_(1, input_ids.clamp(max=vocab - 1), attention_mask.bool())  # (B, V)
    eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)  # (E,)

    responses: list[list[int]] = [[] for _ in range(batch)]
    log_probs: list[list[float]] = [[] for _ in range(batch)]
    active = [row for row, m in enumerate(max_tokens) if m > 0]  # the prompt index of each row still decoding
    if not active:
        return list(zip(responses, log_probs))
    if len(active) < batch:  # requests with max_tokens <= 0 never enter the batch
        index = torch.tensor(active, device=device)  # (A,)
        input_ids, attention_mask, seen = input_ids[index], attention_mask[index], seen[index]  # (A, P), (A, P), (A, V)
        limits = limits[index]  # (A,)
    produced = torch.zeros_like(limits)  # (A,) tokens so far per active row
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (A, P)
    step_ids, past = input_ids, None
    greedy = spec.temperature <= 0
    while True:
        out = model(
            input_ids=step_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()  # (A, V)
        if penalise:
            logits = _apply_repetition_penalty(logits, seen, spec.repetition_penalty)  # (A, V)
        scaled = logits if greedy else logits / spec.temperature  # (A, V)
        token_logp = torch.log_softmax(scaled, dim=-1)  # (A, V)
        if greedy:
            next_ids = scaled.argmax(dim=-1)  # (A,)
        else:
            filtered = _filter_top_k_top_p(scaled, spec.top_k, spec.top_p)  # (A, V)
            probs = torch.softmax(filtered, dim=-1)  # (A, V)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (A,)
        next_logp = token_logp.gather(-1, next_ids[:, None]).squeeze(-1)  # (A,)
        produced += 1
        finished = torch.isin(next_ids, eos) | (produced >= limits)  # (A,)
        # the step's one host sync: token ids (exact in float64), their log-probs, and which rows finished
        host_ids, host_logp, host_finished = torch.stack(
            [next_ids.double(), next_logp.double(), finished.double()]
        ).tolist()  # (3, A) -> lists
        for row, token, logp in zip(active, host_ids, host_logp):
            responses[row].append(int(token))
            log_probs[row].append(logp)
        if all(host_finished):
            break
        if penalise:
            seen[torch.arange(len(active), device=device), next_ids] = True
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)  # (A, P+t+1)
        position_ids = position_ids[:, -1:] + 1  # (A, 1)
        if any(host_finished):
            kept = [i for i, done in enumerate(host_finished) if not done]
            keep = torch.tensor(kept, device=device)  # (A',) rows that decode on
            past.batch_select_indices(keep)
            active = [active[i] for i in kept]
            next_ids, limits, produced = next_ids[keep], limits[keep], produced[keep]
            attention_mask, position_ids = attention_mask[keep], position_ids[keep]  # (A', P+t+1), (A', 1)
            if penalise:
                seen = seen[keep]  # (A', V)
        step_ids = next_ids[:, None]  # (A, 1)
    return list(zip(responses, log_probs))
