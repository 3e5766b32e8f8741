"""The CPU demo's default task, ``countdown``: a length-diverse verifiable task, written as verl parquet.

A prompt is one number N; the answer counts down from N-1 to 0, so the correct response is exactly N tokens
(plus EOS) and the prompt alone fixes its length. Numbers are written with the letters a-j for the digits
0-9 (37 is ``"dh"``, the answer ``"dg df ... b a"``): Qwen2's tokenizer, which verl's agent loop needs and
transformers reloads the demo tokenizer as, splits digit runs into single digits but keeps a run of letters
one word, so each number is one token. N is drawn
log-uniformly from [MIN_COUNT, MAX_COUNT] (our choice): every doubling of length is about equally likely,
so the length bins 1-8, 8-16, ..., 64-128 and 128+ are all populated in every step, from 2-token answers to
150-token ones. Each number is one token of the demo vocabulary (:mod:`fspo_verl.demo.model`).

The rule is local (the next word is the previous one minus 1; EOS after 0), so a tiny model learns it from
a short supervised pass (:mod:`fspo_verl.demo.warm_start`), yet sampling at temperature 1 slips often
enough over 100+ tokens that RL has room to improve. The reward is
:func:`fspo_verl.demo.reward.score_countdown` (the correct words before the first mistake, over the longer
of response and answer).

Rows follow verl's RL dataset schema: ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model = {"style": "rule", "ground_truth": ...}``, ``extra_info = {"split", "index", "answer_length"}``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from fspo_verl.demo.reward import COUNTDOWN_SOURCE

#: answer lengths (tokens before EOS) range over [MIN_COUNT, MAX_COUNT]; MAX_COUNT bounds the vocabulary
MIN_COUNT = 2
MAX_COUNT = 150
#: the letters that write the digits 0-9
LETTERS = "abcdefghij"


def number_word(k: int) -> str:
    """k written with LETTERS for its decimal digits: 0 -> "a", 37 -> "dh", 150 -> "bfa"."""
    return "".join(LETTERS[int(d)] for d in str(k))


#: the words of the task, index = value
WORDS = [number_word(k) for k in range(MAX_COUNT + 1)]


def draw_count(rng: random.Random) -> int:
    """N, log-uniform on [MIN_COUNT, MAX_COUNT] (integer)."""
    return min(MAX_COUNT, int(math.exp(rng.uniform(math.log(MIN_COUNT), math.log(MAX_COUNT + 1)))))


def answer_for(count: int) -> str:
    """``"N-1 N-2 ... 0"`` (in words) for a prompt N: N words."""
    return " ".join(WORDS[k] for k in range(count - 1, -1, -1))


def make_rows(count: int, split: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        n = draw_count(rng)
        rows.append(
            {
                "data_source": COUNTDOWN_SOURCE,
                "prompt": [{"role": "user", "content": WORDS[n]}],
                "ability": "counting",
                "reward_model": {"style": "rule", "ground_truth": answer_for(n)},
                "extra_info": {"split": split, "index": index, "answer_length": n},
            }
        )
    return rows


def write_task(out_dir: Path, train_rows: int = 2048, val_rows: int = 64, seed: int = 0) -> dict[str, str]:
    """Write ``train.parquet`` and ``val.parquet`` under ``out_dir``; returns their paths."""
    from fspo_verl.demo.task import write_parquet_splits

    return write_parquet_splits(out_dir, make_rows, train_rows, val_rows, seed)
