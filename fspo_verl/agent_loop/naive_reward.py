"""verl's naive reward for one single-turn trajectory, without the one-row ``DataProto`` built to carry it.

For each trajectory, verl's ``AgentLoopWorker._compute_score`` builds a one-row ``DataProto``: a
``TensorDict`` of five padded tensors, and one ``numpy`` array per prompt column. It sends that to a reward
worker, whose ``NaiveRewardManager.run_single`` slices out the row again and reads only this:

- the response tokens (every one: a single trajectory has no padding), decoded with
  ``skip_special_tokens=True`` (an executor hop in verl);
- from the prompt columns, ``data_source``, ``reward_model["ground_truth"]``, ``extra_info`` (``{}`` if
  absent) and ``reward_scores`` (``{}`` if absent);
- from the output, ``extra_fields``, merged into ``extra_info`` (``tool_extra_fields``), and ``num_turns``.

It then calls the reward function (in an executor, if the function is not a coroutine) with
``data_source``, ``solution_str``, ``ground_truth`` and ``extra_info``. A ``dict`` result gives
``score`` and the extra info; a number is the score, with ``{"acc": score}`` as the extra info.

On the demo's 256 trajectories per step, building and slicing that ``DataProto`` (with the deep copy that
isolates it, as a Ray call would) is most of the agent-loop worker's postprocess (profile in ``docs/profiles.md``).
:func:`naive_reward` computes the same result from the output and the prompt's columns. The values the
reward function sees are those it would see through verl:

- each column value passes through ``np.array([value])[0]``, as verl's one-row arrays do, so a ``str``
  arrives as ``numpy.str_`` and ``num_turns`` as ``numpy.int64``;
- it is deep-copied first, so the caller's ``extra_info`` and ``extra_fields`` are untouched.

It applies only to verl's ``NaiveRewardManager`` itself, on one-output trajectories (:func:`naive_reward_applies`).
Any other reward manager, a reward model, or a multi-output trajectory takes verl's path. A property test
compares the two paths on generated trajectories.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import numpy as np
import torch


def naive_reward_applies(reward_manager: Any, outputs: list) -> bool:
    """True when ``reward_manager`` is verl's ``NaiveRewardManager`` (not a subclass) without a reward router,
    and the trajectory has one output."""
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    return (type(reward_manager) is NaiveRewardManager and reward_manager.reward_router_address is None
            and len(outputs) == 1)


def _as_verl_cell(value: Any) -> Any:
    """The value the reward manager reads for a one-row column holding ``value``, isolated from the caller."""
    return copy.deepcopy(np.array([value])[0])


async def naive_reward(reward_manager: Any, output: Any, prompt_columns: dict[str, Any]) -> dict[str, Any]:
    """``{"reward_score": float, "reward_extra_info": dict}`` that verl's ``NaiveRewardManager.run_single``
    returns for the one-output trajectory ``output`` of the prompt row ``prompt_columns`` (see the module)."""
    columns = {key: _as_verl_cell(prompt_columns[key]) for key in ("data_source", "reward_model", "extra_info",
                                                                   "reward_scores") if key in prompt_columns}
    extra_info = columns.get("extra_info", {})
    tool_extra_fields = copy.deepcopy(output.extra_fields)
    if tool_extra_fields is not None:
        extra_info.update(tool_extra_fields.items())
    extra_info["num_turns"] = np.array([output.num_turns])[0]
    extra_info["rollout_reward_scores"] = columns.get("reward_scores", {})

    response_ids = torch.tensor(output.response_ids, dtype=torch.int64)  # (R,), all valid
    solution_str = reward_manager.tokenizer.decode(response_ids, skip_special_tokens=True)
    kwargs = dict(data_source=columns["data_source"], solution_str=solution_str,
                  ground_truth=columns["reward_model"]["ground_truth"], extra_info=extra_info)
    if reward_manager.is_async_reward_score:
        result = await reward_manager.compute_score(**kwargs)
    else:  # in an executor, as verl runs it: a slow or blocking reward function must not stall the loop
        result = await asyncio.get_running_loop().run_in_executor(None, lambda: reward_manager.compute_score(**kwargs))

    if isinstance(result, dict):
        return {"reward_score": result["score"], "reward_extra_info": dict(result)}
    return {"reward_score": result, "reward_extra_info": {"acc": result}}
