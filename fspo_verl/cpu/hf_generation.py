"""Batched token-in/token-out sampling with a Hugging Face causal LM on CPU, with vLLM's sampling contract.

Used by the ``hf`` rollout server (:mod:`fspo_verl.cpu.hf_server`). Pure torch, no Ray, so it is tested
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
    """
    device = next(model.parameters()).device
    batch, longest = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((batch, longest), pad_token_id, dtype=torch.long, device=device)  # (B, P)
    attention_mask = torch.zeros((batch, longest), dtype=torch.long, device=device)  # (B, P)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, longest - len(prompt) :] = 1
    limits = torch.tensor(max_tokens, dtype=torch.long, device=device)  # (B,)
    vocab = model.get_output_embeddings().weight.shape[0]
    seen = torch.zeros((batch, vocab), dtype=torch.bool, device=device)  # (B, V)
    if spec.repetition_penalty != 1.0:
        seen.scatter_(1, input_ids.clamp(max=vocab - 1), attention_mask.bool())  # (B, V)
    eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)  # (E,)

    responses: list[list[int]] = [[] for _ in range(batch)]
    log_probs: list[list[float]] = [[] for _ in range(batch)]
    finished = limits <= 0  # (B,)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
    step_ids, past = input_ids, None
    for step in range(int(limits.max().item())):
        out = model(
            input_ids=step_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()  # (B, V)
        if spec.repetition_penalty != 1.0:
            logits = _apply_repetition_penalty(logits, seen, spec.repetition_penalty)  # (B, V)
        greedy = spec.temperature <= 0
        scaled = logits if greedy else logits / spec.temperature  # (B, V)
        token_logp = torch.log_softmax(scaled, dim=-1)  # (B, V)
        if greedy:
            next_ids = scaled.argmax(dim=-1)  # (B,)
        else:
            filtered = _filter_top_k_top_p(scaled, spec.top_k, spec.top_p)  # (B, V)
            probs = torch.softmax(filtered, dim=-1)  # (B, V)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
        next_logp = token_logp.gather(-1, next_ids[:, None]).squeeze(-1)  # (B,)
        for row in torch.nonzero(~finished).flatten().tolist():
            responses[row].append(int(next_ids[row]))
            log_probs[row].append(float(next_logp[row]))
        produced = torch.tensor([len(r) for r in responses], device=device)  # (B,)
        finished = finished | torch.isin(next_ids, eos) | (produced >= limits)  # (B,)
        if bool(finished.all()):
            break
        if spec.repetition_penalty != 1.0:
            seen[torch.arange(batch), next_ids] = True
        next_ids = torch.where(finished, torch.full_like(next_ids, pad_token_id), next_ids)  # (B,)
        step_ids = next_ids[:, None]  # (B, 1)
        attention_mask = torch.cat([attention_mask, (~finished).long()[:, None]], dim=-1)  # (B, P+step+1)
        position_ids = position_ids[:, -1:] + 1  # (B, 1)
    return list(zip(responses, log_probs))
