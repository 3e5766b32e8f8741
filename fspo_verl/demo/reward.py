"""Rule-based reward of the demo task (``next_digit``), loaded the verl way::

    reward.custom_reward_function.path=pkg://fspo_verl.demo.reward
    reward.custom_reward_function.name=compute_score

verl's reward loop calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` with the
decoded response (special tokens, EOS included, removed).
"""

from __future__ import annotations

from typing import Any

DATA_SOURCE = "fspo_next_digit"

#: score of a response that starts with the right digit but keeps talking. Our choice: partial credit
#: gives a dense learning signal to a randomly initialised model; the full score needs the stop too.
PARTIAL_CREDIT = 0.5


def score_response(solution_str: str, ground_truth: str) -> float:
    """1.0 for exactly the answer, PARTIAL_CREDIT if the response only starts with it, else 0.0.

    Whitespace is ignored: every word of the demo vocabulary is one character, and tokenizers differ in
    whether they decode word-level tokens with spaces between them.
    """
    text = "".join(solution_str.split())
    if not text.startswith(ground_truth):
        return 0.0
    return 1.0 if text == ground_truth else PARTIAL_CREDIT


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs: Any
) -> float:
    if data_source != DATA_SOURCE:
        raise ValueError(f"fspo_verl.demo.reward scores data_source={DATA_SOURCE!r} only, got {data_source!r}")
    return score_response(solution_str, str(ground_truth))
