"""Rule-based rewards of the demo tasks, loaded the verl way::

    reward.custom_reward_function.path=pkg://fspo_verl.demo.reward
    reward.custom_reward_function.name=compute_score

verl's reward loop calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` with the
decoded response (special tokens, EOS included, removed); ``data_source`` picks the task's rule.

- ``fspo_countdown`` (:mod:`fspo_verl.demo.countdown`, the default demo): :func:`score_countdown`.
- ``fspo_next_digit`` (:mod:`fspo_verl.demo.task`, data=synthetic_cpu): :func:`score_response`.
- ``fspo_checksum`` (:mod:`fspo_verl.demo.checksum`, data=checksum_cpu): :func:`score_checksum`.
"""

from __future__ import annotations

from typing import Any

DATA_SOURCE = "fspo_next_digit"
COUNTDOWN_SOURCE = "fspo_countdown"
CHECKSUM_SOURCE = "fspo_checksum"

#: score of a response that starts with the right digit but keeps talking. Our choice: partial credit
#: gives a dense learning signal to a randomly initialised model; the full score needs the stop too.
PARTIAL_CREDIT = 0.5


def score_response(solution_str: str, ground_truth: str) -> float:
    """next_digit: 1.0 for exactly the answer, PARTIAL_CREDIT if the response only starts with it, else 0.0.

    Whitespace is ignored: every word of the demo vocabulary is one character, and tokenizers differ in
    whether they decode word-level tokens with spaces between them.
    """
    text = "".join(solution_str.split())
    if not text.startswith(ground_truth):
        return 0.0
    return 1.0 if text == ground_truth else PARTIAL_CREDIT


def score_countdown(solution_str: str, ground_truth: str) -> float:
    """countdown: the correct words before the first mistake, over the longer of response and answer.

        score = P / max(|r|, |a|),   P = max{k : r_i = a_i for all i < k}     (r, a: the whitespace-separated words)

    in [0, 1], 1 only for exactly the answer. The max() is the length term: stopping k words early loses
    k/|a|, running k words long costs the share k/(|a|+k), so short and long answers both carry a graded
    signal. Nothing after the first mistake counts. A position-by-position score (our earlier choice) credits
    words after a slip when they line up with the answer again, so it pays a stutter that realigns (a number
    repeated after a skipped one); under the prefix score a slip's continuation has no effect on the reward,
    and the only way to 1 is the rule. Measured, the difference is small: in a PyTorch replay of the demo
    step with the earlier warm start, 30 steps gained +0.11..+0.17 (prefix) vs +0.09..+0.15 (positions).
    """
    response, answer = solution_str.split(), ground_truth.split()
    longest = max(len(response), len(answer))
    if longest == 0:
        return 0.0
    prefix = 0
    for r, a in zip(response, answer):
        if r != a:
            break
        prefix += 1
    return prefix / longest


#: checksum's weight of the final digit (our choice: the task's reward depends mostly on its one hard token; the
#: scratchpad's 0.25 keeps a graded signal for a response that stops or slips before it)
CHECKSUM_FINAL_WEIGHT = 0.75


def score_checksum(solution_str: str, ground_truth: str) -> float:
    """checksum: the check digit first, then the scratchpad's correct words before its first mistake.

        score = w * [r_1 = a_1] + (1 - w) * P / max(|r| - 1, |a| - 1),   w = CHECKSUM_FINAL_WEIGHT
        P = max{k : r_{1+i} = a_{1+i} for all i < k}        (r, a: the whitespace-separated words; a = digit, N words)

    in [0, 1], 1 only for exactly the answer. The scratchpad term is countdown's prefix score over its N
    words: a response that stops after the digit earns w, never 1.
    """
    response, answer = solution_str.split(), ground_truth.split()
    if not response or len(answer) < 2:
        return 0.0
    digit = float(response[0] == answer[0])
    prefix = 0
    for r, a in zip(response[1:], answer[1:]):
        if r != a:
            break
        prefix += 1
    scratchpad = prefix / max(len(response) - 1, len(answer) - 1)
    return CHECKSUM_FINAL_WEIGHT * digit + (1.0 - CHECKSUM_FINAL_WEIGHT) * scratchpad


_RULES = {DATA_SOURCE: score_response, COUNTDOWN_SOURCE: score_countdown, CHECKSUM_SOURCE: score_checksum}


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs: Any
) -> float:
    if data_source not in _RULES:
        raise ValueError(f"fspo_verl.demo.reward scores data_source in {sorted(_RULES)} only, got {data_source!r}")
    return _RULES[data_source](solution_str, str(ground_truth))
