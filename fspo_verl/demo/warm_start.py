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
greedy accuracy they give are in docs/cpu-demo.md.

``next_digit`` (data=synthetic_cpu) gets its own model, the same architecture and tokenizer. The countdown model
has never seen a digit: its mean next_digit reward is about 0.005, near a randomly initialised model's 0.002
(the right one of ~170 words), so most steps had no group with a spread of rewards and RL hardly moved (0.004
-> 0.034 in 40 real verl steps). Its pass is NEXT_DIGIT_SFT_STEPS steps at label smoothing
NEXT_DIGIT_LABEL_SMOOTHING (our choice, about 2 s): converged, so where RL starts does not hinge on where a
short pass stops (without smoothing the sampled reward jumps 0.10 -> 0.35 between 30 and 40 steps). Greedy
answers are right and the sampled reward is about 0.35 (a PyTorch check, 512 prompts, temperature 1): a group
of 8 samples almost always has a spread of rewards, which GRPO and PODS need.

``checksum`` (data=checksum_cpu, :mod:`fspo_verl.demo.checksum`) puts its uncertainty in one token: the
scratchpad (countdown's words), the space before the digit and the EOS are learnt without smoothing, and the
digit d is learnt against a target smoothed over the ten digits only (the choice stays a digit, so a wrong
one does not derail what follows):

    loss = [sum_{t not d} CE_t + w * loss_d] / #answer-tokens,
    loss_d = -(1-eps_d) log p(d | y_<t) - eps_d * mean_{v in digits} log p(v | y_<t)

The weight w = CHECKSUM_CHOICE_WEIGHT = 10 is our choice: at w = 1 the one digit is ~1/100 of the loss and a
300-step pass left it near chance (greedy reward 0.375, the digit right ~17% of the time); with the digit's mean as a term of its own (w ~ 100) the pass learnt the
digit and lost the scratchpad (no greedy answer of the right length). CHECKSUM_SFT_STEPS and
CHECKSUM_CHOICE_SMOOTHING are our choice: greedy answers are right and the digit is right about half the time
at temperature 1, so a group of 16 samples almost always has a spread of rewards, at every length
(measured start in ``docs/length-fairness.md``).

Each model is built on first use of its own asset keys, then cached (:func:`fspo_verl.demo.ensure_assets`).
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
#: checksum's pass (our choice, see the module docstring); same SFT_BATCH, SFT_LR, SFT_SEED
CHECKSUM_SFT_STEPS = 300
CHECKSUM_CHOICE_SMOOTHING = 0.6
#: the digit's weight in the pass (our choice, see the module docstring)
CHECKSUM_CHOICE_WEIGHT = 10.0


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


def _checksum_example(tokenizer, rng: random.Random) -> tuple[list[int], int, int]:
    """A checksum example, N drawn with probability rising linearly in N on [MIN_COUNT, MAX_COUNT] (the larger of
    two uniform draws: the word k appears only in the answers of N > k, and the scratchpad is learnt without
    smoothing, so the high numbers need more than countdown's uniform draw to be sampled without slips):
    (prompt + scratchpad + space + digit + EOS ids, prompt length, index of the digit)."""
    from fspo_verl.demo.checksum import MAX_COUNT, MIN_COUNT, answer_for, prompt_for

    count = max(rng.randint(MIN_COUNT, MAX_COUNT), rng.randint(MIN_COUNT, MAX_COUNT))
    key = rng.randrange(10)
    prompt = _prompt_ids(tokenizer, prompt_for(count, key))
    answer = tokenizer(" " + answer_for(count, key), add_special_tokens=False)["input_ids"]
    ids = prompt + answer + [tokenizer.eos_token_id]
    return ids, len(prompt), len(prompt) + 1  # the answer's tokens: the space, the digit, the words


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
    choice_smoothing: float = 0.0,
) -> list[float]:
    """Train ``model`` in place on random examples ``example(tokenizer, rng)`` (default: countdown); returns the
    loss of every step. An example ``(ids, prompt length, i)`` marks token ``i`` as a digit choice, learnt
    against a target smoothed by ``choice_smoothing`` over the ten digits (checksum)."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = _train_steps(model, tokenizer, optimizer, rng, steps, label_smoothing, example, choice_smoothing)
    model.eval()
    return losses


def _train_steps(
    model, tokenizer, optimizer, rng: random.Random, steps: int, label_smoothing: float, example,
    choice_smoothing: float = 0.0,
) -> list[float]:
    import torch
    import torch.nn.functional as F

    model.train()
    losses = []
    for _ in range(steps):
        examples = [example(tokenizer, rng) for _ in range(SFT_BATCH)]  # (prompt + answer + EOS ids, prompt length[, choice])
        width = max(len(e[0]) for e in examples)
        input_ids = torch.full((SFT_BATCH, width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((SFT_BATCH, width), -100, dtype=torch.long)  # (B, T); -100: not scored
        mask = torch.zeros((SFT_BATCH, width), dtype=torch.long)  # (B, T)
        choices = torch.full((SFT_BATCH, width), -100, dtype=torch.long)  # (B, T); the digit choices' labels
        for row, (ids, prompt_len, *choice) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            mask[row, : len(ids)] = 1
            for i in choice:  # scored by the choice loss instead
                choices[row, i], labels[row, i] = ids[i], -100
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
        if all(len(e) == 2 for e in examples):
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                label_smoothing=label_smoothing,
            )  # (): mean over the answer tokens
        else:
            loss = _with_choices(logits, targets, choices[:, 1:], tokenizer, label_smoothing, choice_smoothing)  # ()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _with_choices(logits, targets, choices, tokenizer, label_smoothing: float, choice_smoothing: float):
    """The loss of the module docstring: cross-entropy (smoothing ``label_smoothing`` over the vocabulary) on
    ``targets`` and, weighted CHECKSUM_CHOICE_WEIGHT, the digit loss (smoothing over the ten digits) on
    ``choices``, over the answer tokens.
    logits (B, T-1, V); targets, choices (B, T-1) with -100 where not scored."""
    import torch
    import torch.nn.functional as F

    from fspo_verl.demo.model import DIGITS

    flat = logits.reshape(-1, logits.shape[-1])  # (B*(T-1), V)
    words = F.cross_entropy(
        flat, targets.reshape(-1), ignore_index=-100, label_smoothing=label_smoothing, reduction="sum"
    )  # (): summed over the non-choice answer tokens
    picked = choices.reshape(-1) != -100  # (B*(T-1),)
    log_p = torch.log_softmax(flat[picked], dim=-1)  # (C, V): the choice positions
    digit_ids = torch.tensor(tokenizer.convert_tokens_to_ids(DIGITS))  # (10,)
    right = log_p.gather(1, choices.reshape(-1)[picked].unsqueeze(1)).squeeze(1)  # (C,)
    digits = -((1 - choice_smoothing) * right + choice_smoothing * log_p[:, digit_ids].mean(dim=1)).sum()  # ()
    return (words + CHECKSUM_CHOICE_WEIGHT * digits) / (int((targets != -100).sum()) + int(picked.sum()))


#: demo task -> its supervised pass (the keywords of :func:`supervised_pass` that differ from the defaults,
#: which are countdown's)
TASKS = {
    "countdown": {},
    "next_digit": {
        "steps": NEXT_DIGIT_SFT_STEPS, "label_smoothing": NEXT_DIGIT_LABEL_SMOOTHING, "example": _next_digit_example,
    },
    "checksum": {
        "steps": CHECKSUM_SFT_STEPS, "label_smoothing": 0.0, "example": _checksum_example,
        "choice_smoothing": CHECKSUM_CHOICE_SMOOTHING,
    },
}


def sampled_reward(
    model, tokenizer, counts: list[int], seed: int = 0, temperature: float = 1.0, keys: list[int] | None = None
) -> tuple[float, list[int]]:
    """(mean reward, response lengths) of one sample per prompt N in ``counts`` (0: greedy): on countdown, or
    with ``keys`` (a key digit per prompt) on checksum."""
    import torch

    from fspo_verl.demo import checksum, countdown
    from fspo_verl.demo.reward import score_checksum, score_countdown
    from fspo_verl.rollout_hf.generation import SamplingSpec, generate_batch

    if keys is None:
        tasks = [(countdown.WORDS[n], countdown.answer_for(n)) for n in counts]  # (prompt, answer)
    else:
        tasks = [(checksum.prompt_for(n, k), checksum.answer_for(n, k)) for n, k in zip(counts, keys)]
    score = score_countdown if keys is None else score_checksum
    prompts = [_prompt_ids(tokenizer, prompt) for prompt, _ in tasks]
    out = generate_batch(
        model, prompts, [countdown.MAX_COUNT + 10] * len(prompts), SamplingSpec(temperature=temperature),
        {tokenizer.eos_token_id}, tokenizer.pad_token_id, torch.Generator().manual_seed(seed),
    )  # fmt: skip
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in out]
    scores = [score(text, answer) for text, (_, answer) in zip(texts, tasks)]
    return sum(scores) / len(scores), [len(ids) for ids, _ in out]


#: tasks whose supervised pass runs on one torch thread. On a 2-core machine where another process keeps a core
#: busy, torch's two OpenMP threads wait on each other at every op: a checksum build was measured 25x slower with
#: two threads than with one on such a machine. countdown and next_digit keep torch's default, so that their
#: cached weights, and every figure measured with them, stay as they are.
ONE_THREAD_TASKS = frozenset({"checksum"})


def write_warm_model(out_dir: Path, seed: int = 0, task: str = "countdown") -> str:
    """Build the demo model from ``seed``, run ``task``'s supervised pass and save model and tokenizer in
    ``out_dir``."""
    import torch

    from fspo_verl.demo.model import build_model, build_tokenizer, save_model

    if task not in TASKS:
        raise ValueError(f"write_warm_model: task={task!r} is not a demo task; use one of {tuple(TASKS)}")
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    threads = torch.get_num_threads()
    if task in ONE_THREAD_TASKS:
        torch.set_num_threads(1)
    try:
        supervised_pass(model, tokenizer, **TASKS[task])
    finally:
        torch.set_num_threads(threads)
    return save_model(model, tokenizer, out_dir)
