"""The second CPU demo task, ``checksum`` (data=checksum_cpu): the reward by hand, prompts that fill every
length bin in every block of 8, verl-format parquet, and a warm start whose one uncertain token is the final
digit (the one test here that builds the task's model)."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch

from fspo_verl.demo import checksum, countdown, ensure_assets
from fspo_verl.demo.overrides import task_policy_loss
from fspo_verl.demo.reward import CHECKSUM_SOURCE, compute_score
from fspo_verl.diagnostics.length_bins import bin_index

EDGES = task_policy_loss("checksum_cpu")["length_bins"]  # the preset's length_bins


def _bins(lengths: list[int]) -> list[int]:
    return bin_index(torch.tensor(lengths), EDGES).tolist()


@pytest.mark.parametrize(
    ("response", "answer", "score"),
    [
        ("b a 7", "b a 7", 1.0),
        (" b  a 7 ", "b a 7", 1.0),  # whitespace is not a word
        ("b a 3", "b a 7", 0.25),  # scratchpad right (0.25 x 2/2), digit wrong
        ("b a", "b a 7", 0.25),  # stopped before the digit: 0.25 x 2/max(1, 2)
        ("b c 7", "b a 7", 0.75 + 0.25 / 2),  # a slip in the scratchpad, the digit right where it belongs
        ("7", "b a 7", 0.0),  # the digit at once, skipping the scratchpad: paid nothing
        ("b 7", "b a 7", 0.25 / 2),  # the digit one word early: not where the answer puts it
        ("b a 7 7", "b a 7", 0.25 * 2 / 3),  # ran on one word: the digit is not the last word of |a|
        ("a 7", "a 7", 1.0),  # N = 1: the shortest answer
        ("", "b a 7", 0.0),
        ("dg df dd 4", "dg df de 4", 0.75 + 0.25 * 2 / 3),
    ],
)
def test_checksum_reward_by_hand(response, answer, score):
    assert compute_score(CHECKSUM_SOURCE, response, answer) == pytest.approx(score)


def test_answers_and_check_digits():
    assert checksum.check_digit(9) == "0" and checksum.check_digit(3) == "4"
    assert checksum.prompt_for(37, 9) == "dh 9"
    assert checksum.answer_for(3, 9) == "c b a 0"
    assert checksum.answer_for(1, 0) == "a 1"


def test_every_block_of_eight_prompts_fills_every_length_bin():
    """Each consecutive block of 8 rows (one update's prompts) has a correct response (N + 3 tokens) in every bin
    of the preset's length_bins, from 4 tokens to 150."""
    assert tuple(EDGES) == checksum.LENGTH_BINS
    rows = checksum.make_rows(2048, "train", 0)
    lengths = [row["extra_info"]["answer_length"] + 1 for row in rows]  # + EOS
    assert min(lengths) == 4 and max(lengths) <= 150
    for start in range(0, len(rows), checksum.BLOCK):
        assert set(_bins(lengths[start : start + checksum.BLOCK])) == set(range(len(EDGES) + 1)), start
    assert checksum.bin_counts_range() == [(1, 5), (6, 13), (14, 29), (30, 61), (62, 125), (126, 147)]
    assert checksum.make_rows(5, "train", 0) == checksum.make_rows(5, "train", 0) != checksum.make_rows(5, "train", 1)


def test_checksum_parquet_has_verl_schema_and_consistent_answers(demo_cache):
    frame = pd.read_parquet(ensure_assets(demo_cache)["checksum_train_files"])  # the parquet only: no model is built
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(frame.columns)
    for row in frame.itertuples():
        word, key = row.prompt[0]["content"].split()
        n = countdown.WORDS.index(word)
        words = row.reward_model["ground_truth"].split()
        assert row.data_source == CHECKSUM_SOURCE and row.reward_model["style"] == "rule"
        assert row.extra_info["answer_length"] == n + 2 and len(words) == n + 1
        assert [countdown.WORDS.index(w) for w in words[:-1]] == list(range(n - 1, -1, -1))
        assert words[-1] == str((int(key) + 1) % 10)
        assert compute_score(row.data_source, row.reward_model["ground_truth"], row.reward_model["ground_truth"]) == 1.0


def test_the_warm_start_leaves_only_the_final_digit_uncertain(demo_cache):
    """Greedy answers are right at every length; sampled at temperature 1, the scratchpad is almost always
    complete (its length right) at every length, and the reward sits well inside (0, 1), carried by the digit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fspo_verl.demo.warm_start import sampled_reward

    path = ensure_assets(demo_cache)["checksum_model_path"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    rng = random.Random(5)
    counts = [n for _ in range(8) for n in checksum.draw_block(rng)]  # 64 prompts, every bin 8+ times
    keys = [rng.randrange(10) for _ in counts]
    greedy, greedy_lengths = sampled_reward(model, tokenizer, counts, keys=keys, temperature=0.0)
    assert greedy == 1.0
    assert greedy_lengths == [n + 3 for n in counts]
    reward, lengths = sampled_reward(model, tokenizer, counts, keys=keys)
    complete = sum(length == n + 3 for length, n in zip(lengths, counts)) / len(counts)
    assert complete > 0.9, complete
    assert 0.4 < reward < 0.85, reward
