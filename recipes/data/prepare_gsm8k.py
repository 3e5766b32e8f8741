#!/usr/bin/env python3
"""Write GSM8K (Cobbe et al., arXiv 2110.14168) in verl's RL parquet format: train.parquet and test.parquet.

    python recipes/data/prepare_gsm8k.py --out ~/data/fspo_verl/gsm8k          # from the Hugging Face hub
    python recipes/data/prepare_gsm8k.py --from-local sample.jsonl --out DIR   # offline: jsonl rows with
                                                                                # question, answer, split

data_source is "openai/gsm8k" whatever --dataset-id says: that is the name verl 0.9.1's
``default_compute_score`` routes to its GSM8K rule (``verl.utils.reward_score.gsm8k``, strict mode), which
takes the last "#### <number>" in the response and compares it, commas removed, with the ground truth.
So the prompt asks for that format, and the ground truth is the number after "####" in the reference
solution with commas removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verl_rows import (  # noqa: E402
    add_common_flags, build_rows, read_local, require_columns, run, selected, source_records, verl_row, write_parquet,
)

DATA_SOURCE = "openai/gsm8k"
OUTPUTS = ("train", "test")
INSTRUCTION = 'Solve the problem step by step. Finish with a final line of the form "#### <number>" giving only the numeric answer.'


def ground_truth(solution: str) -> str | None:
    """'... #### 1,234' -> '1234'; None when the reference solution has no '####' line."""
    if "####" not in solution:
        return None
    return solution.split("####")[-1].strip().replace(",", "").replace("$", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    parser.set_defaults(out="~/data/fspo_verl/gsm8k")
    parser.add_argument("--dataset-id", default="openai/gsm8k")
    parser.add_argument("--dataset-config", default="main")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--question-column", default="question")
    parser.add_argument("--answer-column", default="answer", help="reference solution ending in '#### <number>'")
    args = parser.parse_args(argv)

    local = read_local(args.from_local, args.local_split_column) if args.from_local else None
    out = Path(args.out).expanduser()
    hub_split = {"train": args.train_split, "test": args.test_split}
    for name in selected(OUTPUTS, args.only):

        def build(record: dict, index: int, split: str = name) -> dict | None:
            require_columns(record, (args.question_column, args.answer_column), f"gsm8k {split}",
                            "set --question-column/--answer-column.")
            truth = ground_truth(str(record[args.answer_column]))
            if truth is None:
                return None
            question = str(record[args.question_column])
            return verl_row(DATA_SOURCE, f"{question}\n\n{INSTRUCTION}", truth, split, index,
                            question=question, answer=str(record[args.answer_column]))

        records = source_records(name, local, args.from_local, args.dataset_id, args.dataset_config, hub_split[name])
        write_parquet(build_rows(records, build, f"gsm8k {name}", args.limit), out / f"{name}.parquet")
    return 0


if __name__ == "__main__":
    run(main)
