"""The CPU demo's second task, ``checksum`` (preset data=checksum_cpu): one hard digit, then a copyable
scratchpad of any length. Written as verl parquet.

A prompt is a number N (in countdown's letter words, :mod:`fspo_verl.demo.countdown`) and a key digit k; the
answer gives the check digit k+1 modulo 10, then counts down from N-1 to 0 (the scratchpad, N words):
``"dh 9"`` (N = 37, k = 9) -> ``"0 dg df ... b a"``. The response is N + 3 tokens: a space and the digit
(Qwen2's pre-tokenizer splits a digit from its space), N words, and EOS. The check digit is a ten-entry map of
the prompt's last token (next_digit's rule). It comes first so that the model reads the key from the
previous token rather than back across up to 150 (our choice; a first version with the digit last and an
unweighted warm start left the digit at chance, greedy reward 0.32; which of the two changes mattered was
not measured).

What differs from countdown, and why it matters for length-fair clipping. On countdown every word is an
equally likely place to slip (the warm start leaves the same share of probability off the rule at every
word), so a long answer holds many uncertain tokens: it is the hard one, and the spread of the sequence
log-ratio S_i = sum_t log r_t grows faster than its length (measured exponent of Var(S|L) ~ 1.8,
``docs/length-fairness.md``). Here the uncertainty sits in one token whatever the length: the scratchpad is
warm-started without label smoothing (the countdown rule is local, so a tiny model learns it and slips far
less often than countdown's smoothed model), and the digit is warm-started with smoothing over the ten digits
(:mod:`fspo_verl.demo.warm_start`): a choice the model makes right about half the time at temperature 1. A long
answer is mostly easy tokens and a short one is mostly the hard choice, so Var(S|L) is about a constant plus a
small term in L: it grows slower than L (exponent below 1), the opposite of countdown. A band of half-width
c*sqrt(L) (FSPO's) then clips the SHORT answers most; a band fitted to the data (``fspo_adaptive``) should be
flat on both tasks.

The scratchpad is countdown's rule rather than a repeated word because a 2-layer model cannot count how
many times it has repeated a word, whereas counting down to 0 tells it where to stop: the length stays under
the prompt's control. The reward (:func:`fspo_verl.demo.reward.score_checksum`) weighs the digit 0.75 and
the scratchpad 0.25 (countdown's prefix score over its N words): the reward depends mostly on the one hard
token, and a response that stops after the digit keeps 0.75, never 1.

Prompts are stratified, not drawn from one distribution: each consecutive block of BLOCK = 8 rows holds one
N from every length bin of the preset's ``length_bins`` (response lengths <= 8, 9-16, 17-32, 33-64, 65-128,
>= 129 tokens; N uniform within the bin) and two from bins drawn at random, in random order. With
``data.shuffle=false`` (data/checksum_cpu.yaml) every update of 8 prompts, and so every step, has sequences
in every bin, from 4-token answers to 150-token ones. (Countdown's log-uniform prompts leave its 128+ bin
empty in some steps.)

Rows follow verl's RL dataset schema: ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model = {"style": "rule", "ground_truth": ...}``, ``extra_info = {"split", "index", "answer_length"}``
(``answer_length``: the response's tokens before EOS, N + 2).
"""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

from fspo_verl.demo.countdown import WORDS
from fspo_verl.demo.countdown import answer_for as countdown_answer
from fspo_verl.demo.reward import CHECKSUM_SOURCE

#: N ranges over [MIN_COUNT, MAX_COUNT]: responses of 4 to 150 tokens (N words, a space, the digit, EOS)
MIN_COUNT = 1
MAX_COUNT = 147
#: tokens of a correct response besides its N scratchpad words: the space, the digit, EOS
EXTRA_TOKENS = 3
#: the preset's length_bins (configs/data_extras/checksum_cpu.yaml); the prompts fill each of their bins
LENGTH_BINS = (8, 16, 32, 64, 128)
#: rows per block that holds every length bin once (6) and two more: a mini-batch of 8 prompts
BLOCK = 8


def check_digit(key: int) -> str:
    """The check digit of key digit k: k+1 modulo 10 (9 -> "0")."""
    return str((key + 1) % 10)


def prompt_for(count: int, key: int) -> str:
    """The prompt's text: N in words, then the key digit: (37, 9) -> "dh 9"."""
    return f"{WORDS[count]} {key}"


def answer_for(count: int, key: int) -> str:
    """``"c N-1 ... 0"``: the check digit c of key k, then countdown's N words: (3, 9) -> "0 c b a"."""
    return f"{check_digit(key)} {countdown_answer(count)}"


def bin_counts_range(edges: tuple[int, ...] = LENGTH_BINS) -> list[tuple[int, int]]:
    """For each length bin (e_{k-1} < L <= e_k, as :func:`fspo_verl.losses.length_bins.bin_index`), the N
    whose correct response (N + EXTRA_TOKENS tokens) falls in it: [(lo, hi)] inclusive."""
    bounds = [0, *edges, MAX_COUNT + EXTRA_TOKENS]
    return [
        (max(MIN_COUNT, lo + 1 - EXTRA_TOKENS), min(MAX_COUNT, hi - EXTRA_TOKENS)) for lo, hi in pairwise(bounds)
    ]


def draw_block(rng: random.Random) -> list[int]:
    """BLOCK prompts N: one in every length bin, the rest in bins drawn at random, in random order."""
    ranges = bin_counts_range()
    bins = list(range(len(ranges))) + [rng.randrange(len(ranges)) for _ in range(BLOCK - len(ranges))]
    rng.shuffle(bins)
    return [rng.randint(*ranges[b]) for b in bins]


def make_rows(count: int, split: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    counts: list[int] = []
    while len(counts) < count:
        counts.extend(draw_block(rng))
    keys = [rng.randrange(10) for _ in counts]
    return [
        {
            "data_source": CHECKSUM_SOURCE,
            "prompt": [{"role": "user", "content": prompt_for(n, k)}],
            "ability": "checksum",
            "reward_model": {"style": "rule", "ground_truth": answer_for(n, k)},
            "extra_info": {"split": split, "index": index, "answer_length": n + EXTRA_TOKENS - 1},
        }
        for index, (n, k) in enumerate(zip(counts[:count], keys))
    ]


def write_task(out_dir: Path, train_rows: int = 2048, val_rows: int = 64, seed: int = 0) -> dict[str, str]:
    """Write ``train.parquet`` and ``val.parquet`` under ``out_dir``; returns their paths."""
    from fspo_verl.demo.task import write_parquet_splits

    return write_parquet_splits(out_dir, make_rows, train_rows, val_rows, seed)
