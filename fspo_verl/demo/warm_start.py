"""Warm start of the demo models: a short supervised pass on the task before RL, one model per demo task.

From random initialisation an 86K-parameter model would need hundreds of RL steps to find the countdown rule;
the demo is meant to show RL on a task the policy half-knows. So the asset build teacher-forces the model on
random countdown examples for SFT_STEPS steps (cross-entropy on the answer and its EOS, the prompt masked),
with label smoothing eps (arXiv 1512.00567):

    loss = sum_{t in answer+EOS} [ -(1-eps) log p(y_t | y_<t) - eps * mean_v log p(v | y_<t) ] / #answer-tokens

The model learns the rule (greedy answers are right) but keeps about eps of its probability off it at every
word, so sampling at temperature 1 slips about once in 1/eps words, at every length alike: RL starts from a
sampled reward near 0.5 with every length bin partly right, and its job is to sharpen a policy that already
knows the answer. Without smoothing, a pass long enough to teach every number leaves sampling nearly exact, and
a pass short enough to leave room is good at short answers and ~0 at long ones, where RL finds no signal.
Examples draw N uniformly (not log-uniformly as the task does): the word k appears in the answers of every
N > k, so the high numbers, which only long answers visit, need the longer answers to be learnt at all.

SFT_STEPS, SFT_LR and SFT_LABEL_SMOOTHING are our choice (about 20 s on 2 cores); the sampled start and the
greedy accuracy they give are in the README.

``next_digit`` (data=synthetic_cpu) gets its own model, the same architecture and tokenizer. The countdown model
has never seen a digit: its mean next_digit reward is about 0.005, near a randomly initialised model's 0.002
(the right one of ~170 words), so most steps had no group with a spread of rewards and RL hardly moved (0.004
-> 0.034 in 40 real verl steps). Its pass is NEXT_DIGIT_SFT_STEPS steps at label smoothing
NEXT_DIGIT_LABEL_SMOOTHING (our choice, about 2 s): converged, so where RL starts does not hinge on where a
short pass stops (without smoothing the sampled reward jumps 0.10 -> 0.35 between 30 and 40 steps). Greedy
answers are right and the sampled reward is about 0.35 (a PyTorch check, 512 prompts, temperature 1): a group
of 8 samples almost always has a spread of rewards, which GRPO and PODS need.

Each model is built once, then cached with the other assets (:func:`fspo_verl.demo.ensure_assets`).
:func:`sampled_reward` measures where countdown RL starts (used by the tests).
"""

from __future__ import annotations

import random
from pathlib import Path

#: our choice, see the module docstring
SFT_STEPS = 300
SFT_BATCH = 32
SFT_LR = 3e-3
SFT_LABEL_SMOOTHING = 0.06
SFT_SEED = 1234  # differs from the task's parquet seeds: the pass sees other examples than RL
#: next_digit's pass (our choice, see the module docstring); same SFT_BATCH, SFT_LR, SFT_SEED
NEXT_DIGIT_SFT_STEPS = 150
NEXT_DIGIT_LABEL_SMOOTHING = 0.5


def _example_ids(tokenizer, count: int) -> tuple[list[int], int]:
    """(prompt + answer + EOS token ids, prompt length) of one countdown example."""
    from fspo_verl.demo.countdown import WORDS, answer_for

    prompt = _prompt_ids(tokenizer, WORDS[count])
    answer = tokenizer(" " + answer_for(count), add_special_tokens=False)["input_ids"]
    return prompt + answer + [tokenizer.eos_token_id], len(prompt)


def _countdown_example(tokenizer, rng: random.Random) -> tuple[list[int], int]:
    """A countdown example with N uniform on [MIN_COUNT, MAX_COUNT]."""
    from fspo_verl.demo.countdown import MAX_COUNT, MIN_COUNT

    return _example_ids(tokenizer, rng.randint(MIN_COUNT, MAX_COUNT))


def _next_digit_example(tokenizer, rng: random.Random) -> tuple[list[int], int]:
    """A next_digit example (:func:`fspo_verl.demo.task.make_example`): the prompt's digits, the answer digit, EOS."""
    from fspo_verl.demo.task import make_example

    content, answer = make_example(rng)
    prompt = _prompt_ids(tokenizer, content)
    return prompt + tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id], len(prompt)


def _prompt_ids(tokenizer, content: str) -> list[int]:
    """The prompt's token ids as verl's agent loop makes them (the chat template, then the tokenizer)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def supervised_pass(
    model,
    tokenizer,
    steps: int = SFT_STEPS,
    lr: float = SFT_LR,
    seed: int = SFT_SEED,
    label_smoothing: float = SFT_LABEL_SMOOTHING,
    example=_countdown_example,
) -> list[float]:
    """Train ``model`` in place on random examples ``example(tokenizer, rng)`` (default: countdown); returns the
    loss of every step."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = _train_steps(model, tokenizer, optimizer, rng, steps, label_smoothing, example)
    model.eval()
    return losses


def _train_steps(
    model, tokenizer, optimizer, rng: random.Random, steps: int, label_smoothing: float, example
) -> list[float]:
    import torch
    import torch.nn.functional as F

    model.train()
    losses = []
    for _ in range(steps):
        examples = [example(tokenizer, rng) for _ in range(SFT_BATCH)]  # (prompt + answer + EOS ids, prompt length)
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((SFT_BATCH, width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((SFT_BATCH, width), -100, dtype=torch.long)  # (B, T); -100: not scored
        mask = torch.zeros((SFT_BATCH, width), dtype=torch.long)  # (B, T)
        for row, (ids, prompt_len) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, label_smoothing=label_smoothing
        )  # (): mean over the answer tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


#: demo task -> its supervised pass (the keywords of :func:`supervised_pass` that differ from the defaults,
#: which are countdown's)
TASKS = {
    "countdown": {},
    "next_digit": {
        "steps": NEXT_DIGIT_SFT_STEPS, "label_smoothing": NEXT_DIGIT_LABEL_SMOOTHING, "example": _next_digit_example,
    },
}


def sampled_reward(
    model, tokenizer, counts: list[int], seed: int = 0, temperature: float = 1.0
) -> tuple[float, list[int]]:
    """(mean countdown reward, response lengths) of one sample per prompt N in ``counts`` (0: greedy)."""
    import torch

    from fspo_verl.cpu.hf_generation import SamplingSpec, generate_batch
    from fspo_verl.demo.countdown import MAX_COUNT, WORDS, answer_for
    from fspo_verl.demo.reward import score_countdown

    prompts = [_prompt_ids(tokenizer, WORDS[n]) for n in counts]
    out = generate_batch(
        model, prompts, [MAX_COUNT + 10] * len(prompts), SamplingSpec(temperature=temperature), {tokenizer.eos_token_id},
        tokenizer.pad_token_id, torch.Generator().manual_seed(seed),
    )  # fmt: skip
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in out]
    scores = [score_countdown(text, answer_for(n)) for text, n in zip(texts, counts)]
    return sum(scores) / len(scores), [len(ids) for ids, _ in out]


def write_warm_model(out_dir: Path, seed: int = 0, task: str = "countdown") -> str:
    """Build the demo model from ``seed``, run ``task``'s supervised pass and save model and tokenizer in
    ``out_dir``."""
    from fspo_verl.demo.model import build_model, build_tokenizer, save_model

    if task not in TASKS:
        raise ValueError(f"write_warm_model: task={task!r} is not a demo task; use one of {tuple(TASKS)}")
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    supervised_pass(model, tokenizer, **TASKS[task])
    return save_model(model, tokenizer, out_dir)
