"""Warm start of the demo model: a short supervised pass on ``countdown`` before RL.

From random initialisation an 86K-parameter model would need hundreds of RL steps to find the countdown rule;
the demo is meant to show RL on a task the policy half-knows. So the asset build teacher-forces the model on
random countdown examples for SFT_STEPS steps (cross-entropy on the answer and its EOS, the prompt masked):

    loss = - sum_{t in answer+EOS} log p(y_t | y_<t) / #answer-tokens        (mean over the batch's tokens)

The length of the pass is our choice (SFT_STEPS, SFT_LR): enough that the model counts down and stops
(varied lengths from RL step 1), short enough that sampling at temperature 1 still slips over long answers,
so RL starts from a sampled reward near 0.4 (0.63 after 90 steps), neither ~0 nor ~1, while greedy
answers are already ~98% right. It is built
once, then cached with the other assets (:func:`fspo_verl.demo.ensure_assets`).
:func:`sampled_reward` measures where RL starts (used by the tests).
"""

from __future__ import annotations

import random
from pathlib import Path

#: our choice, see the module docstring
SFT_STEPS = 50
SFT_BATCH = 32
SFT_LR = 3e-3
SFT_SEED = 1234  # differs from the task's parquet seeds: the pass sees other examples than RL


def _example_ids(tokenizer, count: int) -> tuple[list[int], int]:
    """(prompt + answer + EOS token ids, prompt length) of one countdown example."""
    from fspo_verl.demo.countdown import WORDS, answer_for

    prompt = _prompt_ids(tokenizer, WORDS[count])
    answer = tokenizer(" " + answer_for(count), add_special_tokens=False)["input_ids"]
    return prompt + answer + [tokenizer.eos_token_id], len(prompt)


def _prompt_ids(tokenizer, content: str) -> list[int]:
    """The prompt's token ids as verl's agent loop makes them (the chat template, then the tokenizer)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def supervised_pass(model, tokenizer, steps: int = SFT_STEPS, lr: float = SFT_LR, seed: int = SFT_SEED) -> list[float]:
    """Train ``model`` in place on random countdown examples; returns the loss of every step."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = _train_steps(model, tokenizer, optimizer, rng, steps)
    model.eval()
    return losses


def _train_steps(model, tokenizer, optimizer, rng: random.Random, steps: int) -> list[float]:
    import torch

    from fspo_verl.demo.countdown import draw_count

    model.train()
    losses = []
    for _ in range(steps):
        examples = [_example_ids(tokenizer, draw_count(rng)) for _ in range(SFT_BATCH)]
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((SFT_BATCH, width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((SFT_BATCH, width), -100, dtype=torch.long)  # (B, T); -100: not scored
        mask = torch.zeros((SFT_BATCH, width), dtype=torch.long)  # (B, T)
        for row, (ids, prompt_len) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def sampled_reward(model, tokenizer, counts: list[int], seed: int = 0) -> tuple[float, list[int]]:
    """(mean countdown reward, response lengths) of one temperature-1 sample per prompt N in ``counts``."""
    import torch

    from fspo_verl.cpu.hf_generation import SamplingSpec, generate_batch
    from fspo_verl.demo.countdown import MAX_COUNT, WORDS, answer_for
    from fspo_verl.demo.reward import score_countdown

    prompts = [_prompt_ids(tokenizer, WORDS[n]) for n in counts]
    out = generate_batch(
        model, prompts, [MAX_COUNT + 10] * len(prompts), SamplingSpec(), {tokenizer.eos_token_id},
        tokenizer.pad_token_id, torch.Generator().manual_seed(seed),
    )  # fmt: skip
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in out]
    scores = [score_countdown(text, answer_for(n)) for text, n in zip(texts, counts)]
    return sum(scores) / len(scores), [len(ids) for ids, _ in out]


def write_warm_model(out_dir: Path, seed: int = 0) -> str:
    """Build the demo model from ``seed``, run the supervised pass and save model and tokenizer in ``out_dir``."""
    from fspo_verl.demo.model import build_model, build_tokenizer, save_model

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    supervised_pass(model, tokenizer)
    return save_model(model, tokenizer, out_dir)
