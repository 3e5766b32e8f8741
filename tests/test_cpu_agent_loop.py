"""The batched agent loop (fspo_verl.agent_loop.manager) against verl's real load balancer, reward worker and Ray.

- the coalescing client sends a burst of concurrent requests as ONE call per server, through verl's own
  ``GlobalRequestLoadBalancer`` actor (acquire/release balanced), and a late request as a new call;
- the ``hf`` server decodes a ``generate_many`` call as one batch, without waiting out its window;
- the in-process reward equals verl's ``RewardLoopWorker.compute_score`` on the same ``DataProto``
  and, like the Ray call it replaces, leaves the caller's ``extra_info`` untouched.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import time

import numpy as np
import pytest
import ray
import torch
from _hf_server import bare_server
from hypothesis import given, settings
from hypothesis import strategies as st

import fspo_verl.rollout_hf.server as hf_server
from fspo_verl.agent_loop.manager import (
    CoalescingLLMServerClient,
    InProcessRewardHandle,
    split_evenly,
)
from fspo_verl.demo.model import build_tokenizer
from fspo_verl.rollout_hf.server import HFRolloutServer


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


def _inflight_drains(balancer, within_s: float = 60.0) -> bool:
    """The balancer's in-flight count reaches 0: the client releases its servers fire-and-forget, so this polls
    (a safety net far above the ~ms it takes on an idle machine, not a speed check)."""
    deadline = time.monotonic() + within_s
    while ray.get(balancer.get_total_inflight.remote()) != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


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
    assert _inflight_drains(balancer)  # release is fire-and-forget


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
    assert _inflight_drains(balancer)


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
    from fspo_verl.agent_loop.manager import BatchedAgentLoopWorker

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

    from fspo_verl.agent_loop.manager import BatchedAgentLoopWorker, BatchedPuts

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
    from fspo_verl.agent_loop.manager import BatchedPuts

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
    from fspo_verl.agent_loop.manager import BatchedPuts

    async def broken(**call):
        raise ConnectionError("TransferQueue storage unit gone")

    async def burst():
        puts = BatchedPuts(window_s=0.01, batch_put=broken)
        field = {"responses": torch.tensor([1])}
        return await asyncio.gather(*[puts.put([f"k{i}"], [dict(field)], [{}], "train") for i in range(3)],
                                    return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(burst()))


# ---------------------------------------------------------------- the naive reward without a DataProto
SEEING_REWARD = '''
def _seen(data_source, solution_str, ground_truth, extra_info):
    return repr((type(data_source).__name__, data_source, solution_str, ground_truth,
                 sorted((k, type(v).__name__, repr(v)) for k, v in extra_info.items())))


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """What it was called with, as its extra info; a bare number for ground truths starting with 'n'."""
    score = float(len(solution_str) % 3) / 2
    if ground_truth.startswith("n"):
        return score
    extra_info["touched"] = True  # a reward function may write to extra_info; the caller's must stay as it was
    return {"score": score, "seen": _seen(data_source, solution_str, ground_truth, extra_info)}


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": 0.25, "seen": _seen(data_source, solution_str, ground_truth, extra_info)}
'''


def _naive_reward_worker(tmp_path, function: str = "compute_score"):
    from conftest import compose_verl
    from transformers import AutoTokenizer

    from fspo_verl.agent_loop.manager import BatchedAgentLoopWorker

    tokenizer_dir = tmp_path / "tok"
    if not tokenizer_dir.exists():
        build_tokenizer().save_pretrained(tokenizer_dir)
    reward_file = tmp_path / "seeing_reward.py"
    reward_file.write_text(SEEING_REWARD)
    config = compose_verl([f"actor_rollout_ref.model.path={tokenizer_dir}",
                           f"reward.custom_reward_function.path={reward_file}",
                           f"reward.custom_reward_function.name={function}"])
    worker = object.__new__(BatchedAgentLoopWorker.__ray_actor_class__)
    worker.processor, worker.config, worker.mm_processor_kwargs = None, config, {}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    async def build():  # verl's reward manager keeps the event loop it is built in, as in the Ray actor
        worker.reward_loop_worker_handles = [InProcessRewardHandle(config, tokenizer)]

    _NAIVE_LOOP.run_until_complete(build())
    return worker


_NAIVE_LOOP = asyncio.new_event_loop()  # one loop for these tests' workers, like an actor's


def _trajectory(response_ids, num_turns, extra_fields):
    from verl.experimental.agent_loop import AgentLoopOutput
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics

    return [AgentLoopOutput(prompt_ids=[5, 6], response_ids=list(response_ids), response_mask=[1] * len(response_ids),
                            num_turns=num_turns, metrics=AgentLoopMetrics(), extra_fields=copy.deepcopy(extra_fields),
                            mm_processor_kwargs={})]


def _both_paths(worker, response_ids, kwargs, num_turns=2, extra_fields=None):
    """(ours, verl's): reward, extra info and the output's extra fields after each worker's _compute_score."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    from fspo_verl.agent_loop.manager import BatchedAgentLoopWorker

    extra_fields = extra_fields if extra_fields is not None else {"min_global_steps": 1, "turn_scores": []}
    snapshot = copy.deepcopy(kwargs)

    async def run(method):
        outputs = _trajectory(response_ids, num_turns, extra_fields)
        await method(worker, outputs, kwargs=kwargs)
        final = outputs[-1]
        assert final.metrics.compute_score is not None and final.metrics.compute_score >= 0
        return final.reward_score, final.extra_fields

    ours = _NAIVE_LOOP.run_until_complete(run(BatchedAgentLoopWorker.__ray_actor_class__._compute_score))
    theirs = _NAIVE_LOOP.run_until_complete(run(AgentLoopWorker._compute_score))  # builds the DataProto, verl's run_single in process
    assert kwargs == snapshot  # neither path changed the caller's prompt columns
    return ours, theirs


_texts = st.text(alphabet="abcxyz _", max_size=8)
_extra = st.dictionaries(st.sampled_from(["split", "index", "tag", "answer_length"]),
                         st.one_of(st.integers(-5, 5), _texts, st.lists(st.integers(0, 3), max_size=2)), max_size=3)


@settings(max_examples=25, deadline=None)
@given(response=st.lists(st.integers(0, 60), max_size=12), data_source=_texts, truth=_texts,
       extra_info=st.one_of(st.none(), _extra), reward_scores=st.one_of(st.none(), st.dictionaries(_texts, st.floats(0, 1), max_size=2)),
       num_turns=st.integers(1, 4), tool_fields=st.dictionaries(st.sampled_from(["turn_scores", "tool_rewards", "x"]),
                                                                   st.lists(st.integers(0, 2), max_size=2), max_size=2))
def test_the_direct_naive_reward_equals_verls_run_single_on_its_dataproto(tmp_path_factory, response, data_source, truth,
                                                                          extra_info, reward_scores, num_turns, tool_fields) -> None:
    """Property, limiting case against verl: the same trajectory through our worker's ``_compute_score``
    (:func:`naive_reward`) and through verl's ``AgentLoopWorker._compute_score`` (one-row DataProto, verl's
    ``NaiveRewardManager.run_single``) gives the same score and the same extra info, in which the reward
    function records the types and values it was called with; a bare-number result too ('n...' truths)."""
    global _NAIVE_WORKER
    if _NAIVE_WORKER is None:
        _NAIVE_WORKER = _naive_reward_worker(tmp_path_factory.mktemp("naive"))
    kwargs = {"uid": "u1", "session_id": 0, "global_steps": 3, "data_source": data_source,
              "reward_model": {"style": "rule", "ground_truth": truth}, "index": 7,
              "raw_prompt": [{"role": "user", "content": "q"}], "tools_kwargs": {}}
    if extra_info is not None:
        kwargs["extra_info"] = extra_info
    if reward_scores is not None:
        kwargs["reward_scores"] = reward_scores
    (our_score, our_fields), (verl_score, verl_fields) = _both_paths(_NAIVE_WORKER, response, kwargs, num_turns, tool_fields)
    assert our_score == verl_score
    assert our_fields == verl_fields
    if not truth.startswith("n"):
        assert "'str_'" in our_fields["reward_extra_info"]["seen"]  # data_source came as numpy.str_, as via verl


_NAIVE_WORKER = None


def test_the_direct_naive_reward_by_hand_and_with_an_async_reward_function(tmp_path) -> None:
    worker = _naive_reward_worker(tmp_path)
    tokenizer = worker.reward_loop_worker_handles[0].reward_manager.tokenizer
    ids = tokenizer.encode(" c b") + [tokenizer.eos_token_id]  # the EOS is skipped in the decoded answer
    kwargs = {"uid": "u", "data_source": "d", "reward_model": {"ground_truth": "c b"}, "extra_info": {"index": 1}}
    (score, fields), (verl_score, verl_fields) = _both_paths(worker, ids, kwargs)
    assert score == verl_score == 0.0 + float(len(" c b") % 3) / 2 == 0.5  # by hand: len(" c b") = 4, 4 % 3 = 1
    assert fields == verl_fields
    seen = fields["reward_extra_info"]["seen"]
    assert "' c b'" in seen and "('num_turns', 'int64', 'np.int64(2)')" in seen and "('index', 'int', '1')" in seen
    async_worker = _naive_reward_worker(tmp_path, function="compute_score_async")
    assert async_worker.reward_loop_worker_handles[0].reward_manager.is_async_reward_score
    (score, fields), (verl_score, verl_fields) = _both_paths(async_worker, ids, kwargs)
    assert score == verl_score == 0.25 and fields == verl_fields


def test_other_reward_managers_and_multi_output_trajectories_take_verls_path(tmp_path) -> None:
    from fspo_verl.agent_loop.naive_reward import naive_reward_applies

    manager = _naive_reward_worker(tmp_path).reward_loop_worker_handles[0].reward_manager
    assert naive_reward_applies(manager, [object()])
    assert not naive_reward_applies(manager, [object(), object()])  # a multi-output trajectory
    subclass = type("CustomNaive", (type(manager),), {})
    custom = object.__new__(subclass)
    custom.reward_router_address = None
    assert not naive_reward_applies(custom, [object()])  # a subclass may override run_single
