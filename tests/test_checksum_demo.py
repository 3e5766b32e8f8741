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
from fspo_verl.losses.length_bins import bin_index

EDGES = task_policy_loss("checksum_cpu")["length_bins"]  # the preset's length_bins


def _bins(lengths: list[int]) -> list[int]:
    return bin_index(torch.tensor(lengths), EDGES).tolist()


@pytest.mark.parametrize(
    ("response", "answer", "score"),
    [
        ("7 b a", "7 b a", 1.0),
        (" 7  b a ", "7 b a", 1.0),  # whitespace is not a word
        ("3 b a", "7 b a", 0.25),  # scratchpad right (0.25 x 2/2), digit wrong
        ("7", "7 b a", 0.75),  # stopped after the digit: 0.75 + 0.25 x 0/max(0, 2)
        ("7 b", "7 b a", 0.75 + 0.25 / 2),  # stopped one word early
        ("7 b c", "7 b a", 0.75 + 0.25 / 2),  # a slip in the scratchpad: only the words before it count
        ("7 b a a", "7 b a", 0.75 + 0.25 * 2 / 3),  # ran on one word: charged as countdown charges it
        ("b a", "7 b a", 0.0),  # no digit: the first word is not it, and the scratchpad is off by one
        ("1 a", "1 a", 1.0),  # N = 1: the shortest answer
        ("", "7 b a", 0.0),
        ("4 dg df dd", "4 dg df de", 0.75 + 0.25 * 2 / 3),
    ],
)
def test_checksum_reward_by_hand(response, answer, score):
    assert compute_score(CHECKSUM_SOURCE, response, answer) == pytest.approx(score)


def test_answers_and_check_digits():
    assert checksum.check_digit(9) == "0" and checksum.check_digit(3) == "4"
    assert checksum.prompt_for(37, 9) == "dh 9"
    assert checksum.answer_for(3, 9) == "0 c b a"
    assert checksum.answer_for(1, 0) == "1 a"


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
        assert [countdown.WORDS.index(w) for w in words[1:]] == list(range(n - 1, -1, -1))
        assert words[0] == str((int(key) + 1) % 10)
        assert compute_score(row.data_source, row.reward_model["ground_truth"], row.reward_model["ground_truth"]) == 1.0


def test_the_warm_start_knows_the_task_and_leaves_room_for_rl(demo_cache):
    """Greedy answers are right at every length (digit and scratchpad); sampled at temperature 1 the reward sits
    well inside (0, 1), and most samples keep the answer's length in every bin."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fspo_verl.demo.warm_start import sampled_reward

    path = ensure_assets(demo_cache)["checksum_model_path"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    rng = random.Random(5)
    counts = [n for _ in range(8) for n in checksum.draw_block(rng)]  # 64 prompts, every bin 8+ times
    keys = [rng.randrange(10) for _ in counts]
    greedy, _ = sampled_reward(model, tokenizer, counts, keys=keys, temperature=0.0)
    assert greedy > 0.95, greedy
    reward, lengths = sampled_reward(model, tokenizer, counts, keys=keys)
    assert 0.35 < reward < 0.75, reward
    complete = torch.tensor([float(length == n + 3) for length, n in zip(lengths, counts)])  # (64,)
    bins = torch.tensor(_bins([n + 3 for n in counts]))  # (64,)
    shares = [float(complete[bins == b].mean()) for b in range(len(EDGES) + 1)]
    assert min(shares) > 0.4, shares


def test_the_checksum_warm_start_runs_on_one_thread_and_restores_the_count(monkeypatch, tmp_path):
    """On a 2-core machine with one core busy, two torch threads wait on each other; the checksum pass uses one.
    countdown keeps torch's default (its cached weights stay the same), and the count is restored after."""
    from fspo_verl.demo import model as demo_model
    from fspo_verl.demo import warm_start

    seen: list[int] = []
    monkeypatch.setattr(warm_start, "supervised_pass", lambda *args, **kwargs: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(demo_model, "save_model", lambda model, tokenizer, out: str(out))
    before = torch.get_num_threads()
    warm_start.write_warm_model(tmp_path, task="checksum")
    warm_start.write_warm_model(tmp_path, task="countdown")
    assert seen == [1, before] and torch.get_num_threads() == before
