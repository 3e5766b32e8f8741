"""The agent-loop worker's own work for one demo step, verl's way against ours, measured in the same run.

One step of the CPU demo hands the agent-loop worker 16 prompts x 16 samples = 256 trajectories. Three
pieces of its work, each timed both ways on the same inputs (best of ``--repeats``, interleaved):

- ``prompt tokens``: 256 ``ct_build_initial_tokens`` calls of verl's ``SingleTurnAgentLoop`` (the demo's
  tokenizer and prompts), all in flight together. verl's method, against the worker's ``PromptTokenCache``
  (:mod:`fspo_verl.agent_loop.prompt_tokens`).
- ``reward``: ``_compute_score`` of 256 one-output trajectories with the demo's reward function. verl's
  ``AgentLoopWorker._compute_score`` (one-row ``DataProto``, ``NaiveRewardManager.run_single`` in process),
  against ours (:mod:`fspo_verl.agent_loop.naive_reward`).
- ``write``: one ``tq.async_kv_batch_put`` of the 256 trajectories' fields (27 per trajectory, as the
  worker builds them) into a real TransferQueue, SimpleStorage with two storage units, as ``cluster=cpu``
  runs it. ``fields=list_of_dict_to_tensordict(...)`` (verl), against ``StorageColumns(...)``
  (:mod:`fspo_verl.agent_loop.storage_columns`). The build of the fields is timed with the write.

::

    .venv/bin/python benchmarks/bench_worker_overhead.py [--repeats 5] [--json FILE]

Prints milliseconds and the ratio ours / verl's. Exit status 0 (figures are reported, not enforced).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

N_PROMPTS, N_SAMPLES = 16, 16  # the demo's data.train_batch_size and rollout.n


def _config(model_path: str):
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={model_path}",
            "actor_rollout_ref.rollout.prompt_length=8",  # countdown_cpu's max_prompt_length
            "reward.custom_reward_function.path=pkg://fspo_verl.demo.reward",
            "reward.custom_reward_function.name=compute_score",
        ])


def _worker(config, tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from fspo_verl.agent_loop.manager import (
        BatchedAgentLoopWorker,
        InProcessRewardHandle,
    )

    worker = object.__new__(BatchedAgentLoopWorker.__ray_actor_class__)
    worker.config, worker.llm_client, worker.processor, worker.tools = config, None, None, []
    worker.tokenizer, worker.hf_model_type, worker.dataset_cls = tokenizer, "qwen2", RLHFDataset
    worker._shared_agent_loops, worker.mm_processor_kwargs, worker.distillation_enabled = {}, {}, False
    worker.reward_loop_worker_handles = [InProcessRewardHandle(config, tokenizer)]
    return worker


def _rows(prompts: list, answers: list) -> list[dict]:
    rows = []
    for p, (messages, answer) in enumerate(zip(prompts, answers)):
        for s in range(N_SAMPLES):
            rows.append({"uid": f"u{p}", "session_id": s, "global_steps": 1, "data_source": "fspo_countdown",
                         "prompt": messages, "ability": "counting",
                         "reward_model": {"style": "rule", "ground_truth": answer},
                         "extra_info": {"split": "train", "index": p, "answer_length": len(answer.split())},
                         "raw_prompt": messages, "index": p, "tools_kwargs": {}, "interaction_kwargs": {}})
    return rows


def _outputs(tokenizer, rows: list[dict], rng: random.Random) -> list:
    from verl.experimental.agent_loop import AgentLoopOutput
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics

    outputs = []
    for row in rows:
        words = row["reward_model"]["ground_truth"].split()
        response = tokenizer.encode(" " + " ".join(words[: rng.randint(1, len(words))])) + [tokenizer.eos_token_id]
        outputs.append(AgentLoopOutput(
            prompt_ids=[85], response_ids=response, response_mask=[1] * len(response),
            response_logprobs=[-0.5] * len(response), num_turns=2, metrics=AgentLoopMetrics(), mm_processor_kwargs={},
            extra_fields={"global_steps": 0, "min_global_steps": 0, "max_global_steps": 0, "turn_scores": [],
                          "tool_rewards": []}))
    return outputs


async def _best(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


async def measure(repeats: int) -> dict[str, dict[str, float]]:
    import copy

    import pandas as pd
    import transfer_queue as tq
    from transformers import AutoTokenizer
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    from fspo_verl.agent_loop.manager import BatchedAgentLoopWorker, trajectory_records
    from fspo_verl.agent_loop.prompt_tokens import PromptTokenCache
    from fspo_verl.agent_loop.storage_columns import StorageColumns
    from fspo_verl.demo import ensure_assets
    from fspo_verl.demo.overrides import DATA_ASSETS

    assets = ensure_assets()
    tokenizer = AutoTokenizer.from_pretrained(assets["model_path"])
    worker = _worker(_config(assets["model_path"]), tokenizer)
    table = pd.read_parquet(assets[DATA_ASSETS["countdown_cpu"][0]]).head(N_PROMPTS)  # the demo's task
    prompts = [list(m) for m in table["prompt"]]
    rows = _rows(prompts, [r["ground_truth"] for r in table["reward_model"]])
    results: dict[str, dict[str, float]] = {}

    loop = worker._agent_loop("single_turn_agent")
    verl_tokens = lambda: asyncio.gather(*(SingleTurnAgentLoop.ct_build_initial_tokens(loop, r["raw_prompt"]) for r in rows))  # noqa: E731

    async def our_tokens():  # a fresh cache per step: what one step costs when its prompts are new
        cache = PromptTokenCache(loop.ct_build_initial_tokens._build)
        await asyncio.gather(*(cache(r["raw_prompt"]) for r in rows))

    results["prompt tokens"] = {"verl": await _best(verl_tokens, repeats), "ours": await _best(our_tokens, repeats)}

    outputs = _outputs(tokenizer, rows, random.Random(0))

    def scorer(method):
        async def run():
            fresh = copy.deepcopy(outputs)
            await asyncio.gather(*(method(worker, [o], kwargs=r) for o, r in zip(fresh, rows)))
        return run

    results["reward"] = {"verl": await _best(scorer(AgentLoopWorker._compute_score), repeats),
                         "ours": await _best(scorer(BatchedAgentLoopWorker.__ray_actor_class__._compute_score), repeats)}

    for output in outputs:
        output.reward_score = 0.5
        output.extra_fields["reward_extra_info"] = {"acc": 0.5}
    keys, fields, tags = [], [], []
    for output, row in zip(outputs, rows):
        k, f, t, _ = trajectory_records(worker, [output], False, row)
        keys, fields, tags = keys + k, fields + f, tags + t
    counter = iter(range(10**6))

    def writer(columns):
        async def run():
            prefix = f"w{next(counter)}-"
            await tq.async_kv_batch_put(keys=[prefix + k for k in keys], partition_id="bench",
                                        fields=columns(fields), tags=tags)
        return run

    verl_write, our_write = writer(list_of_dict_to_tensordict), writer(StorageColumns)
    await our_write()  # warm-up: the client's sockets and the storage units' first put
    times = {"verl": [], "ours": []}
    for _ in range(repeats):  # interleaved: both see the same machine
        times["verl"].append(await _best(verl_write, 1))
        times["ours"].append(await _best(our_write, 1))
    results["write"] = {name: min(values) for name, values in times.items()}
    results["fields per trajectory"] = {"verl": float(len(fields[0])), "ours": float(len(fields[0]))}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import transfer_queue as tq

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="fspo_bench_worker_", dir="/tmp"))
    try:
        tq.init({"backend": {"SimpleStorage": {"num_data_storage_units": 2}}})
        try:
            results = asyncio.run(measure(args.repeats))
        finally:
            tq.close()
    finally:
        ray.shutdown()

    print(f"\n{N_PROMPTS} prompts x {N_SAMPLES} samples = {N_PROMPTS * N_SAMPLES} trajectories; best of {args.repeats}")
    print(f"{'work':<16}{'verl ms':>10}{'ours ms':>10}{'ours/verl':>11}")
    for name in ("prompt tokens", "reward", "write"):
        verl_ms, ours_ms = results[name]["verl"], results[name]["ours"]
        print(f"{name:<16}{verl_ms:>10.1f}{ours_ms:>10.1f}{ours_ms / verl_ms:>11.2f}")
    total_verl = sum(results[n]["verl"] for n in ("prompt tokens", "reward", "write"))
    total_ours = sum(results[n]["ours"] for n in ("prompt tokens", "reward", "write"))
    print(f"{'total':<16}{total_verl:>10.1f}{total_ours:>10.1f}{total_ours / total_verl:>11.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
