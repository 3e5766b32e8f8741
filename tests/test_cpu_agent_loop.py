"""The batched agent loop (fspo_verl.cpu.agent_loop) against verl's real load balancer, reward worker and Ray.

- the coalescing client sends a burst of concurrent requests as ONE call per server, through verl's own
  ``GlobalRequestLoadBalancer`` actor (acquire/release balanced), and a late request as a new call;
- the ``hf`` server decodes a ``generate_many`` call as one batch, without waiting out its window;
- the in-process reward equals verl's ``RewardLoopWorker.compute_score`` on the same ``DataProto``
  and, like the Ray call it replaces, leaves the caller's ``extra_info`` untouched.
"""

from __future__ import annotations

import asyncio
import json
import tempfile

import numpy as np
import pytest
import ray
import torch
from _hf_server import bare_server
from hypothesis import given
from hypothesis import strategies as st

import fspo_verl.cpu.hf_server as hf_server
from fspo_verl.cpu.agent_loop import CoalescingLLMServerClient, InProcessRewardHandle, split_evenly
from fspo_verl.cpu.hf_server import HFRolloutServer
from fspo_verl.demo.model import build_tokenizer


@given(st.lists(st.integers(), max_size=50), st.integers(min_value=1, max_value=8))
def test_split_evenly_keeps_order_and_balances(items, parts) -> None:
    chunks = split_evenly(items, parts)
    assert [x for chunk in chunks for x in chunk] == items
    assert len(chunks) == max(1, min(parts, len(items)))
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_split_evenly_by_hand() -> None:
    assert split_evenly([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert split_evenly([1, 2], 4) == [[1], [2]]
    assert split_evenly([], 3) == [[]]


# ---------------------------------------------------------------- the client, with Ray and verl's balancer
@ray.remote
class RecordingServer:
    """The server side of the contract: ``generate_many`` answers each request in order and records the call."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail, self.calls = name, fail, []

    async def generate_many(self, requests):
        from verl.workers.rollout.replica import TokenOutput

        self.calls.append([r["prompt_ids"] for r in requests])
        if self.fail:
            raise RuntimeError(f"{self.name} is down")
        return [TokenOutput(token_ids=[t + 100 for t in r["prompt_ids"]], log_probs=None, stop_reason="completed",
                            extra_fields={"global_steps": 7}) for r in requests]

    def recorded(self):
        return self.calls


@pytest.fixture(scope="module")
def local_ray():
    temp_dir = tempfile.mkdtemp(prefix="fspo_al_", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield
    ray.shutdown()


def _balancer(servers: dict):
    from verl.workers.rollout.router import GlobalRequestLoadBalancer

    return ray.remote(GlobalRequestLoadBalancer).remote(servers)


def _client(balancer, window_s: float = 0.05) -> CoalescingLLMServerClient:
    from omegaconf import OmegaConf

    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": "hf", "full_determinism": False}}})
    client = CoalescingLLMServerClient(config, load_balancer_handle=balancer, window_s=window_s)
    return ray.cloudpickle.loads(ray.cloudpickle.dumps(client))  # it reaches the workers pickled


def test_a_burst_goes_as_one_call_per_server_and_every_caller_gets_its_own_answer(local_ray) -> None:
    servers = {"s0": RecordingServer.remote("s0"), "s1": RecordingServer.remote("s1")}
    balancer = _balancer(servers)
    client = _client(balancer)

    async def burst():
        calls = [client.generate(f"r{i}", prompt_ids=[i], sampling_params={"temperature": 1.0}) for i in range(10)]
        return await asyncio.gather(*calls)

    outputs = asyncio.run(burst())
    assert [o.token_ids for o in outputs] == [[i + 100] for i in range(10)]
    assert all(o.extra_fields["min_global_steps"] == 7 == o.extra_fields["max_global_steps"] for o in outputs)
    calls = {name: ray.get(s.recorded.remote()) for name, s in servers.items()}
    # one call per server, 5 + 5 requests (the balancer handed out the two idle servers, one per chunk)
    assert sorted(len(c) for c in calls.values()) == [1, 1]
    assert sorted(len(c[0]) for c in calls.values()) == [5, 5]
    assert sorted(p[0] for c in calls.values() for p in c[0]) == list(range(10))
    import time

    time.sleep(0.2)  # release is fire-and-forget
    assert ray.get(balancer.get_total_inflight.remote()) == 0


def test_a_request_after_the_quiet_window_is_a_new_call(local_ray) -> None:
    server = RecordingServer.remote("s0")
    client = _client(_balancer({"s0": server}), window_s=0.05)

    async def two_rounds():
        first = await asyncio.gather(*[client.generate(f"a{i}", prompt_ids=[i], sampling_params={}) for i in range(3)])
        await asyncio.sleep(0.3)
        second = await client.generate("b", prompt_ids=[9], sampling_params={})
        return first, second

    first, second = asyncio.run(two_rounds())
    assert [o.token_ids for o in first] == [[100], [101], [102]] and second.token_ids == [109]
    assert ray.get(server.recorded.remote()) == [[[0], [1], [2]], [[9]]]


def test_a_failing_server_fails_its_callers_and_is_released(local_ray) -> None:
    balancer = _balancer({"s0": RecordingServer.remote("s0", fail=True)})
    client = _client(balancer)

    async def burst():
        calls = [client.generate(f"r{i}", prompt_ids=[i], sampling_params={}) for i in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    assert all(isinstance(r, Exception) and "s0 is down" in str(r) for r in results)
    import time

    time.sleep(0.2)
    assert ray.get(balancer.get_total_inflight.remote()) == 0


def test_the_client_refuses_multimodal_requests() -> None:
    client = object.__new__(CoalescingLLMServerClient)
    with pytest.raises(NotImplementedError, match="text-only"):
        asyncio.run(client.generate("r", prompt_ids=[1], sampling_params={}, image_data=["img"]))


# ---------------------------------------------------------------- the server side: generate_many is one batch
def test_generate_many_is_decoded_as_one_batch_without_waiting_for_the_window(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hf_server, "BATCH_WINDOW_S", 30.0)  # waiting it out would time the test out
    monkeypatch.setenv(hf_server.TIMING_DIR_ENV, str(tmp_path))
    async def call():
        server = bare_server()
        requests = [{"prompt_ids": p, "sampling_params": {"temperature": 1.0, "logprobs": True}, "request_id": str(i)}
                    for i, p in enumerate([[3, 4], [5], [6, 7, 8]])]
        return await asyncio.wait_for(server.generate_many(requests), 20)

    outputs = asyncio.run(call())
    assert len(outputs) == 3
    assert all(1 <= len(o.token_ids) <= 6 and len(o.log_probs) == len(o.token_ids) for o in outputs)
    assert all(o.extra_fields == {"global_steps": 3} for o in outputs)
    batches = [json.loads(line) for line in (tmp_path / "replica0.jsonl").read_text().splitlines()]
    assert len(batches) == 1 and batches[0]["prompts"] == [[3, 4], [5], [6, 7, 8]]


def test_a_flush_mark_left_at_the_head_of_the_queue_is_skipped(monkeypatch) -> None:
    monkeypatch.setattr(hf_server, "BATCH_WINDOW_S", 0.01)

    async def scenario():
        server = object.__new__(HFRolloutServer)
        server._queue = asyncio.Queue()
        for item in (hf_server._FLUSH, 1, 2, hf_server._FLUSH, 3):
            server._queue.put_nowait(item)
        return await server._collect_batch(), await server._collect_batch()

    assert asyncio.run(scenario()) == ([1, 2], [3])


# ---------------------------------------------------------------- the reward, in process and as verl computes it
def _reward_config(tokenizer_dir: str):
    from conftest import compose_verl

    return compose_verl([
        f"actor_rollout_ref.model.path={tokenizer_dir}",
        "reward.custom_reward_function.path=pkg://fspo_verl.demo.reward",
        "reward.custom_reward_function.name=compute_score",
    ])


def _one_row(tokenizer, response: str, answer: str, extra_info: dict):
    """A one-trajectory DataProto laid out as verl's AgentLoopWorker._compute_score builds it."""
    from tensordict import TensorDict

    from verl.protocol import DataProto

    prompt = torch.tensor(tokenizer.encode(" count"), dtype=torch.int64)
    resp = torch.tensor(tokenizer.encode(response), dtype=torch.int64)
    ids = torch.cat([prompt, resp])
    batch = TensorDict({"prompts": prompt[None], "responses": resp[None], "input_ids": ids[None],
                        "attention_mask": torch.ones_like(ids)[None], "position_ids": torch.arange(len(ids))[None]},
                       batch_size=1)
    kwargs = {"data_source": "fspo_countdown", "reward_model": {"ground_truth": answer}, "extra_info": extra_info}
    non_tensor = {**{k: np.array([v]) for k, v in kwargs.items()}, "__num_turns__": np.array([2]),
                  "tool_extra_fields": np.array([{}], dtype=object)}
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


def test_in_process_reward_equals_verls_reward_worker_and_leaves_extra_info_alone(tmp_path) -> None:
    from verl.experimental.reward_loop import RewardLoopWorker

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    config = _reward_config(str(tmp_path))
    cases = [(" c b a", "c b a", 1.0), (" c a a", "c b a", 1 / 3), (" c b", "c b a", 2 / 3)]

    async def both():
        # built inside the running loop, as in a Ray async actor: verl's reward manager keeps the loop it sees
        verl_worker = RewardLoopWorker(config)  # the class behind verl's Ray reward workers, in this process
        ours = InProcessRewardHandle(config, verl_worker.input_tokenizer)
        results = []
        for response, answer, _ in cases:
            extra = {"index": 4}
            ours_result = await ours.compute_score.remote(_one_row(verl_worker.input_tokenizer, response, answer, extra))
            untouched = dict(extra)
            verl_row = _one_row(verl_worker.input_tokenizer, response, answer, {"index": 4})
            results.append((ours_result, await verl_worker.compute_score(verl_row), untouched))
        return results

    for (_, _, expected), (ours_result, verl_result, untouched) in zip(cases, asyncio.run(both())):
        assert ours_result["reward_score"] == pytest.approx(expected)
        assert ours_result["reward_score"] == verl_result["reward_score"]
        assert untouched == {"index": 4}  # verl's naive manager adds keys to extra_info; the caller's stays as it was


# ---------------------------------------------------------------- the TransferQueue write
def _outputs(lengths, reward=0.5):
    from verl.experimental.agent_loop import AgentLoopOutput
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics

    outputs = []
    for i, (p, r) in enumerate(lengths):
        outputs.append(AgentLoopOutput(
            prompt_ids=list(range(1, p + 1)), response_ids=list(range(10, 10 + r)), response_mask=[1] * r,
            response_logprobs=[-0.5] * r, reward_score=reward, num_turns=2, metrics=AgentLoopMetrics(),
            extra_fields={"min_global_steps": 3, "max_global_steps": 4, "reward_extra_info": {"acc": i}},
        ))
    return outputs


def _bare_worker():
    from fspo_verl.cpu.agent_loop import BatchedAgentLoopWorker

    worker = object.__new__(BatchedAgentLoopWorker.__ray_actor_class__)
    worker.processor = None

    async def no_op(*args, **kwargs):
        return None

    worker._compute_score = no_op  # the outputs carry their reward already
    worker._compute_teacher_logprobs = no_op
    return worker


def test_our_postprocess_writes_what_verls_postprocess_writes(monkeypatch) -> None:
    """Limiting case against verl: the same outputs through verl's AgentLoopWorkerTQ._agent_loop_postprocess
    (its TransferQueue call recorded) and through ours (BatchedPuts' write recorded) give the same keys, tags
    and fields, for a one-output and a multi-output trajectory (whose earlier outputs get the final reward)."""
    import verl.trainer.ppo.v1.agent_loop_tq as agent_loop_tq
    from fspo_verl.cpu.agent_loop import BatchedAgentLoopWorker, BatchedPuts

    theirs_calls, ours_calls = [], []

    async def record_theirs(**call):
        theirs_calls.append(call)

    async def record_ours(**call):
        ours_calls.append(call)

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", record_theirs)
    kwargs = {"uid": "u7", "session_id": 2, "global_steps": 5, "data_source": "fspo_countdown",
              "reward_model": {"ground_truth": "c b a"}, "index": 11}
    worker = _bare_worker()
    worker._puts = BatchedPuts(window_s=0.01, batch_put=record_ours)
    for lengths in ([(3, 4)], [(2, 5), (4, 1)]):  # one output; a multi-output trajectory
        theirs_calls.clear()
        ours_calls.clear()
        asyncio.run(agent_loop_tq.AgentLoopWorkerTQ.__ray_actor_class__._agent_loop_postprocess(
            worker, _outputs(lengths), True, **kwargs))
        worker._puts = BatchedPuts(window_s=0.01, batch_put=record_ours)  # a fresh one per event loop
        asyncio.run(BatchedAgentLoopWorker.__ray_actor_class__._agent_loop_postprocess(
            worker, _outputs(lengths), True, **kwargs))
        (verl_call,), (our_call,) = theirs_calls, ours_calls
        assert our_call["keys"] == verl_call["keys"] == [f"u7_2_{i}" for i in range(len(lengths))]
        assert our_call["tags"] == verl_call["tags"]
        assert our_call["partition_id"] == verl_call["partition_id"] == "val"
        ours, theirs = our_call["fields"], verl_call["fields"]
        assert sorted(ours.keys()) == sorted(theirs.keys())
        for name in theirs.keys():
            a, b = ours.get(name), theirs.get(name)
            if isinstance(b, torch.Tensor) and not b.is_nested:
                assert torch.equal(a, b), name
            elif isinstance(b, torch.Tensor):
                assert all(torch.equal(x, y) for x, y in zip(a.unbind(), b.unbind())), name
            else:
                assert a.tolist() == b.tolist(), name
    tags = our_call["tags"]
    assert tags[0]["seq_len"] == 7 and tags[1]["response_len"] == 1  # by hand: 2+5, and the second output's 1
    assert tags[0]["min_global_steps"] == 3 and tags[0]["max_global_steps"] == 4


def test_batched_puts_write_a_burst_once_per_partition_and_field_set() -> None:
    from fspo_verl.cpu.agent_loop import BatchedPuts

    calls = []

    async def record(**call):
        calls.append(call)

    def trajectory(uid, extra=False):
        field = {"responses": torch.tensor([1, 2]), "uid": uid}
        if extra:
            field["teacher_ids"] = [0]
        return [f"{uid}_0_0"], [field], [{"status": "success"}]

    async def burst():
        puts = BatchedPuts(window_s=0.05, batch_put=record)
        await asyncio.gather(
            puts.put(*trajectory("a"), "train"), puts.put(*trajectory("b"), "train"),
            puts.put(*trajectory("c"), "val"), puts.put(*trajectory("d", extra=True), "train"),
        )
        await puts.put(*trajectory("e"), "train")  # after the burst was written: its own write
        return puts.writes

    writes = asyncio.run(burst())
    assert writes == 4 == len(calls)
    assert [c["keys"] for c in calls] == [["a_0_0", "b_0_0"], ["c_0_0"], ["d_0_0"], ["e_0_0"]]
    assert [c["partition_id"] for c in calls] == ["train", "val", "train", "train"]
    assert calls[0]["fields"].batch_size[0] == 2


def test_a_failed_write_fails_the_postprocess_of_each_of_its_trajectories() -> None:
    from fspo_verl.cpu.agent_loop import BatchedPuts

    async def broken(**call):
        raise ConnectionError("TransferQueue storage unit gone")

    async def burst():
        puts = BatchedPuts(window_s=0.01, batch_put=broken)
        field = {"responses": torch.tensor([1])}
        return await asyncio.gather(*[puts.put([f"k{i}"], [dict(field)], [{}], "train") for i in range(3)],
                                    return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(burst()))
