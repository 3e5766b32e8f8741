"""The synthetic verifiable task ``next_digit`` (preset data=synthetic_cpu), written as verl-format parquet.

A prompt is a run of 2-5 consecutive digits counting up modulo 10 (``"6 7 8 9"``); the answer is the next
digit (``"0"``). The rule is a fixed map from the last prompt digit. A randomly initialised model of the demo's
~170-word vocabulary answers right about once in 500 tries, too rarely for RL, so the task has its own model,
warm-started to a sampled reward of about 0.35 (:mod:`fspo_verl.demo.warm_start`); RL then sharpens it within
a few minutes. The reward is :mod:`fspo_verl.demo.reward`.

Rows follow verl's RL dataset schema: ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model = {"style": "rule", "ground_truth": ...}``, ``extra_info = {"split", "index"}``.
"""

from __future__ import annotations

import random
from pathlib import Path

from fspo_verl.demo.reward import DATA_SOURCE

DIGITS = [str(d) for d in range(10)]


def make_example(rng: random.Random) -> tuple[str, str]:
    """(prompt text, answer) for one random run of digits."""
    start, length = rng.randrange(10), rng.randint(2, 5)
    run = [DIGITS[(start + i) % 10] for i in range(length)]
    return " ".join(run), DIGITS[(start + length) % 10]


def make_rows(count: int, split: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        prompt, answer = make_example(rng)
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": prompt}],
                "ability": "pattern",
                "reward_model": {"style": "rule", "ground_truth": answer},
                "extra_info": {"split": split, "index": index},
            }
        )
    return rows


def write_parquet_splits(out_dir: Path, rows_for, train_rows: int, val_rows: int, seed: int) -> dict[str, str]:
    """Write ``train.parquet`` and ``val.parquet`` under ``out_dir`` from ``rows_for(count, split, seed)``
    (the val split draws from ``seed + 1``); returns ``{"train_files", "val_files"}``."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count, split_seed in (("train", train_rows, seed), ("val", val_rows, seed + 1)):
        path = out_dir / f"{split}.parquet"
        tmp = path.with_suffix(".tmp")
        pd.DataFrame(rows_for(count, split, split_seed)).to_parquet(tmp)
        tmp.replace(path)
        paths[f"{split}_files"] = str(path)
    return paths


def write_task(out_dir: Path, train_rows: int = 1024, val_rows: int = 64, seed: int = 0) -> dict[str, str]:
    """Write ``train.parquet`` and ``val.parquet`` under ``out_dir``; returns their paths."""
    return write_parquet_splits(out_dir, make_rows, train_rows, val_rows, seed)
