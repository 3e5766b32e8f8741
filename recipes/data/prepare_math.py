#!/usr/bin/env python3
"""Write MATH (Hendrycks et al., arXiv 2103.03874) training data and the MATH-500 / AIME24 / AIME25
validation sets in verl's RL parquet format: train.parquet, math500.parquet, aime24.parquet, aime25.parquet.

    python recipes/data/prepare_math.py --out ~/data/fspo_verl/math           # from the Hugging Face hub
    python recipes/data/prepare_math.py --from-local sample.jsonl --out DIR   # offline: jsonl rows with
        problem, solution (train/math500) or answer (aime24/aime25), and split in {train,math500,aime24,aime25}

Which verl 0.9.1 scorer (``verl.utils.reward_score.default_compute_score``) grades each output, and so
which answer format the prompt asks for:

    output     data_source              scorer                      response format parsed    score
    train      lighteval/MATH           math_reward.compute_score   last \\boxed{...}          1.0 / 0.0
    math500    HuggingFaceH4/MATH-500   math_reward.compute_score   last \\boxed{...}          1.0 / 0.0
    aime24     aime24                   math_dapo.compute_score     last "Answer: ..." line    1.0 / -1.0
    aime25     aime25                   math_dapo.compute_score     last "Answer: ..." line    1.0 / -1.0

MATH ground truth is the content of the last \\boxed{} of the reference solution (``--solution-column``).
AIME ground truth is the integer answer column written canonically ('073' -> '73'), since math_dapo
compares normalised strings and would not equate the two. Note that verl's DAPO scorer gives -1.0 (not
0.0) to a wrong AIME answer and also returns ``acc`` (1/0); read AIME accuracy from the ``acc`` metric.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verl_rows import (  # noqa: E402
    add_common_flags, build_rows, canonical_integer, read_local, require_columns, run, selected, source_records,
    verl_row, write_parquet,
)

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
ANSWER_LINE_INSTRUCTION = (
    'Please reason step by step. The last line of your response must be "Answer: N", '
    "where N is the final answer (an integer from 0 to 999)."
)

#: output -> (data_source, default hub id, default config, default split, answer kind)
OUTPUTS: dict[str, tuple[str, str, str | None, str, str]] = {
    "train": ("lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", None, "train", "boxed"),
    "math500": ("HuggingFaceH4/MATH-500", "HuggingFaceH4/MATH-500", None, "test", "boxed"),
    "aime24": ("aime24", "HuggingFaceH4/aime_2024", None, "train", "integer"),
    "aime25": ("aime25", "math-ai/aime25", None, "test", "integer"),
}


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\boxed x``) in ``text``, braces balanced; None when there is
    none. Matches what verl's math_reward scorer credits in a response (it finds ``\\fbox{}`` but then fails
    to unbox it and scores 0, so an ``\\fbox`` answer counts as none here too)."""
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0].strip()
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for pos in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[brace + 1 : pos]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    parser.set_defaults(out="~/data/fspo_verl/math")
    for name, (_, dataset_id, config, split, _) in OUTPUTS.items():
        parser.add_argument(f"--{name}-dataset", default=dataset_id, help="hub dataset id (default: %(default)s)")
        parser.add_argument(f"--{name}-config", default=config)
        parser.add_argument(f"--{name}-split", default=split)
    parser.add_argument("--problem-column", default="problem")
    parser.add_argument("--solution-column", default="solution", help="MATH/MATH-500: reference solution with \\boxed{}")
    parser.add_argument("--answer-column", default="answer", help="AIME: the integer answer")
    args = parser.parse_args(argv)

    local = read_local(args.from_local, args.local_split_column) if args.from_local else None
    out = Path(args.out).expanduser()
    for name in selected(OUTPUTS, args.only):
        data_source, _, _, _, kind = OUTPUTS[name]
        answer_column = args.solution_column if kind == "boxed" else args.answer_column
        instruction = BOXED_INSTRUCTION if kind == "boxed" else ANSWER_LINE_INSTRUCTION

        def build(record: dict, index: int, name=name, data_source=data_source, kind=kind,
                  answer_column=answer_column, instruction=instruction) -> dict | None:
            require_columns(record, (args.problem_column, answer_column), f"math {name}",
                            "set --problem-column/--solution-column/--answer-column.")
            reference = str(record[answer_column])
            truth = last_boxed(reference) if kind == "boxed" else canonical_integer(reference)
            if not truth:
                return None
            problem = str(record[args.problem_column])
            return verl_row(data_source, f"{problem}\n\n{instruction}", truth, name, index,
                            question=problem, reference=reference)

        records = source_records(name, local, args.from_local, getattr(args, f"{name}_dataset"),
                                 getattr(args, f"{name}_config"), getattr(args, f"{name}_split"))
        write_parquet(build_rows(records, build, f"math {name}", args.limit), out / f"{name}.parquet")
    return 0


if __name__ == "__main__":
    run(main)
