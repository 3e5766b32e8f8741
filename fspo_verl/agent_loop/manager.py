"""A batched agent loop for verl's V1 trainer: the same trajectories as verl's, with fewer calls per response.

verl's ``AgentLoopWorkerTQ`` (``verl/trainer/ppo/v1/agent_loop_tq.py``) runs one asyncio task per response
and, per response, instantiates the agent loop with Hydra, makes one Ray call to the load balancer and one
to a rollout server, makes one Ray call to a reward worker (serialising a ``DataProto``), and writes to
TransferQueue. With a tiny model on CPU that orchestration is most of a step (``_run_agent_loop`` and those
four calls, in the profiles of ``docs/profiles.md``); the ``hf`` servers, fed one request at a time, decoded each step's requests in 8-12 batches, each as long as its longest response, so
they were busy 3.3x the time one batch per server takes (``benchmarks/bench_step_time.py``).

:class:`BatchedAgentLoopManager` (``actor_rollout_ref.rollout.agent.agent_loop_manager_class``, set by
``cluster=cpu`` and ``cluster=1gpu_hf``; nothing in it depends on the platform) keeps verl's worker and its per-response logic, and changes how four things are reached:

- **generation** (``rollout.name=hf`` only): :class:`CoalescingLLMServerClient` gathers the concurrent
  requests of one worker until none has arrived for ``window_s``, splits them over the servers the load
  balancer lists, takes one server per chunk from the balancer (least-loaded) and sends each chunk in one
  Ray call (``HFRolloutServer.generate_many``), which the server decodes as one batch;
- **the agent loop object**: a ``SingleTurnAgentLoop`` keeps its per-request state in locals, so one
  instance per worker serves every request (other agent loops are still built per request, as verl does),
  and its prompt tokens are built once per distinct prompt, not once per sample
  (:class:`~fspo_verl.agent_loop.prompt_tokens.PromptTokenCache`);
- **the reward**: when no reward model is enabled, verl's ``RewardLoopWorker.compute_score`` is only
  ``reward_manager.run_single(data)``; :class:`InProcessRewardHandle` runs that same reward manager (built
  by verl's ``load_reward_manager``) inside the agent-loop worker, on a copy of the non-tensor fields (the
  naive manager updates ``extra_info`` in place, which a Ray call would have isolated). For verl's naive
  manager and a one-output trajectory, :func:`~fspo_verl.agent_loop.naive_reward.naive_reward` computes the same
  result without building the one-row ``DataProto``. With a reward model, the Ray reward workers are used
  as before;
- **the TransferQueue write**: each trajectory's keys, fields and tags are built as verl's
  ``AgentLoopWorkerTQ._agent_loop_postprocess`` builds them (``trajectory_records``; a test compares the
  two on the same outputs), and :class:`BatchedPuts` writes those that complete together in one
  ``tq.async_kv_batch_put`` (one per partition and field set). Each trajectory's postprocess returns only
  after its write has landed, so verl's ``_run_prompt`` still publishes a prompt's terminal status after
  all its data. With SimpleStorage the write's ``fields`` are
  :class:`~fspo_verl.agent_loop.storage_columns.StorageColumns` instead of verl's TensorDict: the same stored data,
  without the NonTensorStack packing TransferQueue unpacks again.

The prompt statuses (``running``, ``finished``, ``failure``) are written as verl's ``_run_prompt`` writes
them, in the same order, a burst at a time (:mod:`fspo_verl.agent_loop.status_writes`). The worker counts its prompt
groups and sessions (:mod:`fspo_verl.agent_loop.rollout_progress`): the client sends as soon as every session that
can still generate waits, and the driver's replay buffer is woken when the groups settle. The shared single-turn
loop merges its generated tokens without an executor hop (:mod:`fspo_verl.agent_loop.assistant_merge`), and the
worker's start-up heap is frozen out of garbage collection (:mod:`fspo_verl.common.gc_pauses`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any, Optional
from uuid import uuid4

import ray
import torch
from verl.experimental.agent_loop.agent_loop import (
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.trainer.ppo.v1.agent_loop_tq import (
    AgentLoopManagerTQ,
    AgentLoopWorkerTQ,
    apply_greedy_sampling_params,
)
from verl.utils.profiler import simple_timer
from verl.utils.rollout_trace import rollout_trace_attr
from verl.workers.rollout.llm_server import LLMServerClient

from fspo_verl.agent_loop.assistant_merge import merge_inline
from fspo_verl.agent_loop.bursts import QuietWindowBatches
from fspo_verl.agent_loop.naive_reward import naive_reward, naive_reward_applies
from fspo_verl.agent_loop.prompt_tokens import PromptTokenCache
from fspo_verl.agent_loop.rollout_progress import (
    GeneratingSessions,
    RolloutProgress,
    RolloutProgressWaiter,
    current_ticket,
    tasks_of,
)
from fspo_verl.agent_loop.status_writes import BatchedStatuses
from fspo_verl.agent_loop.storage_columns import StorageColumns, storage_columns_apply
from fspo_verl.common.gc_pauses import freeze_startup_heap

logger = logging.getLogger(__name__)

#: agent loop classes whose ``run`` keeps no state on the instance, so one instance can serve all requests
STATELESS_AGENT_LOOPS: tuple[type, ...] = (SingleTurnAgentLoop,)

#: how long the client waits for another request before sending what it has (seconds). Our choice: verl's
#: worker starts a step's requests a few ms apart (tokenisation and task start-up), so 20 ms of quiet means
#: the burst is over; it costs 20 ms per generation round, under 1% of a demo step.
COALESCE_WINDOW_S = 0.02

#: most requests sent in one flush (split over the servers). Our choice: HFRolloutServer.MAX_BATCH_SIZE per
#: server for the demo's two replicas.
COALESCE_MAX_REQUESTS = 512

#: quiet time before the pending TransferQueue writes go out together (seconds). Our choice: the
#: postprocesses of one decoded batch finish within a few ms of each other (each ~1-2 ms of CPU), so 10 ms of
#: quiet ends the burst; a step pays it once or twice.
PUT_WINDOW_S = 0.01

#: most trajectories in one TransferQueue write
PUT_MAX_TRAJECTORIES = 1024


class CoalescingLLMServerClient(LLMServerClient):
    """An ``LLMServerClient`` that sends one agent-loop worker's concurrent requests as one call per server.

    ``generate`` has verl's signature and returns verl's ``TokenOutput`` (with ``min_global_steps`` and
    ``max_global_steps`` defaulted to the weight version, as ``LLMServerClient.generate`` does). Requests
    are queued; once no request has arrived for ``window_s`` (or ``max_requests`` are queued) the queue is
    split into as many contiguous chunks as the load balancer has servers, and each chunk goes to the
    server the balancer hands out for it (one acquire and one release per chunk, so its in-flight counts
    stay meaningful) through ``generate_many``. A failed chunk fails exactly its own requests.

    Text-only (the ``hf`` backend is); sticky sessions are per chunk, which costs nothing on ``hf``
    (no prefix cache).
    """

    def __init__(self, config: Any, load_balancer_handle: Any = None, window_s: float = COALESCE_WINDOW_S,
                 max_requests: int = COALESCE_MAX_REQUESTS, **kwargs: Any) -> None:
        super().__init__(config, load_balancer_handle=load_balancer_handle, **kwargs)
        self.window_s, self.max_requests = float(window_s), int(max_requests)
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._requests = QuietWindowBatches(self.window_s, self.max_requests, self._dispatch_in_background)
        self._inflight: set[asyncio.Task] = set()
        self._unanswered = 0  # requests sent to a server whose answer has not come back
        self.sessions: Optional[GeneratingSessions] = None  # set by the worker (attach_sessions)

    def attach_sessions(self, sessions: GeneratingSessions) -> None:
        """Send the queued requests as soon as every session that may still generate is waiting for an answer
        (queued or sent), instead of waiting out the quiet window: no further request can come until one
        is answered. Without it (or while some session is busy elsewhere, e.g. in a tool call) the window
        decides."""
        self.sessions = sessions

    def _all_sessions_waiting(self) -> bool:
        return self.sessions is not None and len(self._requests) + self._unanswered >= self.sessions.generating

    def __getstate__(self) -> dict:  # the client travels to the workers by Ray; its asyncio state must not
        state = self.__dict__.copy()
        for name in ("_requests", "_inflight", "_unanswered", "sessions"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    async def generate(self, request_id, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data: Optional[list[Any]] = None, video_data: Optional[list[Any]] = None,
                       audio_data: Optional[list[Any]] = None, mm_processor_kwargs: Optional[dict[str, Any]] = None,
                       **kwargs: Any):
        if image_data or video_data or audio_data:
            raise NotImplementedError("the hf rollout backend is text-only; use rollout.name=vllm for multimodal")
        request = {"prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params),
                   "request_id": self._vllm_request_id(request_id)}
        future = asyncio.get_running_loop().create_future()
        self._requests.add((request, future))
        if self._all_sessions_waiting():
            self._requests.flush_now()
        output = await future
        global_steps = output.extra_fields.get("global_steps")
        output.extra_fields.setdefault("min_global_steps", global_steps)
        output.extra_fields.setdefault("max_global_steps", global_steps)
        return output

    async def _dispatch_in_background(self, batch: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
        self._unanswered += len(batch)  # until _send or _fail_chunk answers its callers
        task = asyncio.get_running_loop().create_task(self._dispatch(batch))  # the next burst need not wait
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _fail_chunk(self, chunk: list[tuple[dict[str, Any], asyncio.Future]], err: BaseException) -> None:
        self._unanswered -= len(chunk)
        _fail(chunk, err)

    async def _dispatch(self, batch: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
        try:
            servers = await self._load_balancer.get_all_servers.remote()
        except Exception as err:  # noqa: BLE001 - delivered to every waiting request
            self._fail_chunk(batch, err)
            return
        chunks = split_evenly(batch, max(1, len(servers)))
        await asyncio.gather(*(self._send(chunk) for chunk in chunks))

    async def _send(self, chunk: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
        try:
            server_id, server = await self._acquire_server(f"coalesced-{uuid4().hex}")
        except Exception as err:  # noqa: BLE001
            self._fail_chunk(chunk, err)
            return
        try:
            outputs = await server.generate_many.remote([request for request, _ in chunk])
        except Exception as err:  # noqa: BLE001
            self._fail_chunk(chunk, err)
            return
        finally:
            self._release_server(server_id)
        if len(outputs) != len(chunk):
            self._fail_chunk(chunk, RuntimeError(f"server {server_id} answered {len(outputs)} of {len(chunk)} requests"))
            return
        self._unanswered -= len(chunk)
        for (_, future), output in zip(chunk, outputs):
            if not future.done():
                future.set_result(output)


async def _settle_session_tasks(tasks: list[asyncio.Task]) -> list[BaseException]:
    """Wait for every session task; the exceptions they raised (verl's rule: all settle before a status)."""
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [result for result in results if isinstance(result, BaseException)]


def _fail(items: list[tuple[Any, asyncio.Future]], err: BaseException) -> None:
    for _, future in items:
        if not future.done():
            future.set_exception(err)


def split_evenly(items: list, parts: int) -> list[list]:
    """``items`` in ``min(parts, len(items))`` contiguous chunks whose sizes differ by at most one."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def trajectory_records(worker: Any, outputs: list, validate: bool, kwargs: dict[str, Any]):
    """The (keys, fields, tags, partition) that verl's ``AgentLoopWorkerTQ._agent_loop_postprocess`` writes
    for one trajectory's outputs (after its reward and teacher steps).

    Keys are ``{uid}_{session_id}_{index}``. Fields are ``output.as_dict()`` plus the prompt's columns
    (``kwargs``), without raw multimodal data, with ``loss_mask`` (the response mask), ``input_ids``
    (prompt + response, int64, ``(P+R,)``), ``position_ids`` (the worker's ``_compute_position_ids``) and
    ``multi_modal_inputs``. Tags carry the lengths and the weight versions verl's staleness control reads.
    """
    uid, session_id = kwargs["uid"], kwargs["session_id"]
    keys, fields, tags = [], [], []
    for index, output in enumerate(outputs):
        prompt = torch.tensor(output.prompt_ids, dtype=torch.int64)  # (P,)
        response = torch.tensor(output.response_ids, dtype=torch.int64)  # (R,)
        input_ids = torch.cat([prompt, response])  # (P+R,)
        attention_mask = torch.ones_like(input_ids)  # (P+R,), no padding inside one trajectory
        multi_modal_inputs = worker._compute_multi_modal_inputs(output, input_ids)
        position_ids = worker._compute_position_ids(input_ids[None], attention_mask[None], multi_modal_inputs).squeeze(0)

        field = {**output.as_dict(), **kwargs}
        field.pop("multi_modal_data", None)
        field["loss_mask"] = field["response_mask"]
        field["input_ids"] = input_ids
        field["position_ids"] = position_ids
        field["multi_modal_inputs"] = multi_modal_inputs
        prompt_len, response_len = len(field["prompts"]), len(field["responses"])
        extra = field["extra_fields"]
        keys.append(f"{uid}_{session_id}_{index}")
        fields.append(field)
        tags.append({
            "status": "success",
            "prompt_len": prompt_len,
            "response_len": response_len,
            "seq_len": prompt_len + response_len,
            "global_steps": kwargs["global_steps"],  # the dataloader step this prompt came from
            "min_global_steps": extra.get("min_global_steps"),  # weight version generation started with
            "max_global_steps": extra.get("max_global_steps"),  # and ended with
        })
    return keys, fields, tags, ("val" if validate else "train")


class BatchedPuts:
    """Writes the trajectories that finish together to TransferQueue in one ``async_kv_batch_put``.

    :meth:`put` queues one trajectory's (keys, field dicts, tags) and returns when they have been written
    (or raises what the write raised). Once nothing has been queued for ``window_s`` (or ``max_trajectories``
    are queued) the queue is written, grouped by partition and by field names (``list_of_dict_to_tensordict``
    takes the first dict's keys, so dicts with other keys go in their own write).

    ``columns`` builds the write's ``fields`` from the field dicts: verl's ``list_of_dict_to_tensordict`` by
    default, or :class:`~fspo_verl.agent_loop.storage_columns.StorageColumns` (the same stored data, ~4x cheaper to
    write, SimpleStorage only).
    """

    def __init__(self, window_s: float = PUT_WINDOW_S, max_trajectories: int = PUT_MAX_TRAJECTORIES,
                 batch_put: Any = None, columns: Any = None) -> None:
        self._batch_put = batch_put  # tq.async_kv_batch_put unless a test passes its recorder
        self._columns = columns  # verl's list_of_dict_to_tensordict unless given
        self._trajectories = QuietWindowBatches(window_s, max_trajectories, self._write)
        self.writes = 0  # how many batch puts were made (for tests and logs)

    async def put(self, keys: list[str], fields: list[dict], tags: list[dict], partition_id: str) -> None:
        future = asyncio.get_running_loop().create_future()
        self._trajectories.add((keys, fields, tags, partition_id, future))
        await future

    async def _write(self, batch: list) -> None:
        if self._columns is None:
            from verl.utils.tensordict_utils import list_of_dict_to_tensordict

            self._columns = list_of_dict_to_tensordict
        if self._batch_put is None:
            import transfer_queue as tq

            self._batch_put = tq.async_kv_batch_put
        groups: dict[tuple, list] = {}
        for item in batch:
            keys, fields, tags, partition_id, _ = item
            groups.setdefault((partition_id, frozenset(fields[0])), []).append(item)
        for (partition_id, _), items in groups.items():
            try:
                await self._batch_put(
                    keys=[k for item in items for k in item[0]],
                    fields=self._columns([f for item in items for f in item[1]]),
                    tags=[t for item in items for t in item[2]],
                    partition_id=partition_id,
                )
                self.writes += 1
            except Exception as err:  # noqa: BLE001 - delivered to each trajectory's postprocess
                _fail([(None, item[4]) for item in items], err)
                continue
            for item in items:
                if not item[4].done():
                    item[4].set_result(None)


class _LocalMethod:
    """``handle.compute_score.remote(data)`` for an in-process object: returns the coroutine to await."""

    def __init__(self, function) -> None:
        self._function = function

    def remote(self, *args: Any, **kwargs: Any):
        return self._function(*args, **kwargs)


class InProcessRewardHandle:
    """Duck-types the ``compute_score.remote(data)`` of verl's ``RewardLoopWorker`` handle, in process.

    verl's ``AgentLoopWorker._compute_score`` builds the ``DataProto`` and awaits
    ``random.choice(handles).compute_score.remote(data)``; with this handle that is an in-process call of
    the reward manager that ``RewardLoopWorker`` would have run (``load_reward_manager`` on the same config
    and tokenizer, ``run_single(data)``), without the Ray call and the ``DataProto`` serialisation. Only for
    configs without a reward model (:func:`in_process_reward_applies`).
    """

    def __init__(self, config: Any, tokenizer: Any) -> None:
        from verl.trainer.ppo.reward import load_reward_manager

        self.reward_manager = load_reward_manager(config, tokenizer, reward_router_address=None,
                                                  reward_model_tokenizer=None)
        self.compute_score = _LocalMethod(self._compute_score)

    async def _compute_score(self, data: Any) -> dict:
        from verl.protocol import DataProto

        # The naive manager adds keys to extra_info in place; a Ray call would have worked on a copy.
        isolated = DataProto(batch=data.batch, non_tensor_batch=copy.deepcopy(data.non_tensor_batch),
                             meta_info=copy.deepcopy(data.meta_info))
        return await self.reward_manager.run_single(isolated)


def in_process_reward_applies(config: Any) -> bool:
    """True when verl's RewardLoopWorker.compute_score would only call ``reward_manager.run_single``."""
    reward = config.get("reward", {}) or {}
    reward_model = reward.get("reward_model", {}) or {}
    return not bool(reward_model.get("enable", False))


#: the plain class behind verl's ``@ray.remote`` AgentLoopWorkerTQ (Ray refuses to subclass an actor class)
_AgentLoopWorkerTQBase = AgentLoopWorkerTQ.__ray_actor_class__


@ray.remote
class BatchedAgentLoopWorker(_AgentLoopWorkerTQBase):
    """verl's ``AgentLoopWorkerTQ`` with a shared stateless agent loop, without a reward model the reward
    computed in process, and batched TransferQueue writes (see the module docstring)."""

    def __init__(self, config, llm_client, teacher_client=None, reward_loop_worker_handles=None):
        super().__init__(config, llm_client, teacher_client, reward_loop_worker_handles)
        self._shared_agent_loops: dict[str, Any] = {}
        self._puts = BatchedPuts(columns=StorageColumns if storage_columns_apply(config) else None)
        self._statuses = BatchedStatuses()
        self._progress = RolloutProgress()
        self._sessions = GeneratingSessions()
        if isinstance(self.llm_client, CoalescingLLMServerClient):
            self.llm_client.attach_sessions(self._sessions)
        if reward_loop_worker_handles is not None and in_process_reward_applies(config):
            self.reward_loop_worker_handles = [InProcessRewardHandle(config, self.tokenizer)]
        freeze_startup_heap("agent-loop worker")  # no full-heap GC pause inside a step (fspo_verl.common.gc_pauses)

    async def wait_for_rollout_progress(self, seen: Optional[int], timeout: float) -> int:
        """How many prompt groups this worker has settled, once more than ``seen`` have and the worker is idle or
        quiet, or after ``timeout`` s (:class:`~fspo_verl.agent_loop.rollout_progress.RolloutProgress`). The driver's
        replay buffer calls it instead of sleeping between polls."""
        return await self._progress.wait(seen, timeout)

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        """verl's ``AgentLoopWorkerTQ._run_prompt``: the ``running`` status, rollout.n sessions, then
        ``finished`` (or ``failure`` if any session failed) once every session settled. The statuses go
        through :class:`~fspo_verl.agent_loop.status_writes.BatchedStatuses`; the group counts in the worker's
        rollout progress, and its sessions in the generating sessions, until they are done."""
        validate = trajectory["validate"]
        uid, partition_id = prompt["uid"], "train" if not validate else "val"
        config = self.config.actor_rollout_ref.rollout
        # NOTE (verl): a prompt may carry its own n.
        n = prompt.pop("__rollout_n__", config.n if not validate else config.val_kwargs.n)
        do_sample = prompt.pop("__do_sample__", True)
        self._progress.start()
        ticket = self._sessions.ticket(n)
        try:
            await self._statuses.put(uid, partition_id, {"status": "running"})
            tasks: list[asyncio.Task] = []
            try:
                run_sampling_params = dict(sampling_params)
                if not validate and not do_sample:
                    apply_greedy_sampling_params(run_sampling_params)
                with tasks_of(ticket):  # each session task copies the context, and with it the ticket
                    tasks = [asyncio.create_task(self._run_agent_loop(run_sampling_params, trajectory=trajectory,
                                                                      trace=trace, session_id=i, **prompt))
                             for i in range(n)]
                # a terminal status only once every session settled: no sibling writes after the buffer clears
                session_errors = await _settle_session_tasks(tasks)
                for error in session_errors:
                    logger.error(f"Error in _run_prompt for uid={uid}", exc_info=(type(error), error, error.__traceback__))
                await self._statuses.put(uid, partition_id, {"status": "failure" if session_errors else "finished"})
            except Exception as e:
                logger.exception(f"Error in _run_prompt: {e}")
                if tasks:
                    await _settle_session_tasks(tasks)
                await self._statuses.put(uid, partition_id, {"status": "failure"})
        finally:
            ticket.close()
            self._progress.settle()

    def _agent_loop(self, agent_name: str):
        """The agent loop for ``agent_name``: the worker's shared instance for a stateless class, else a new one."""
        if agent_name in self._shared_agent_loops:
            return self._shared_agent_loops[agent_name]
        if agent_name not in _agent_loop_registry:
            raise KeyError(f"agent loop {agent_name!r} is not registered; registered: {sorted(_agent_loop_registry)}")
        import hydra

        agent_loop = hydra.utils.instantiate(
            config=_agent_loop_registry[agent_name],
            trainer_config=DictConfigWrap(config=self.config),
            server_manager=self.llm_client,
            tokenizer=self.tokenizer,
            processor=self.processor,
            hf_model_type=self.hf_model_type,
            dataset_cls=self.dataset_cls,
            data_config=DictConfigWrap(self.config.data),
            tools=ToolListWrap(self.tools),
        )
        if type(agent_loop) in STATELESS_AGENT_LOOPS:
            # one render per distinct prompt for its rollout.n samples (fspo_verl.agent_loop.prompt_tokens)
            agent_loop.ct_build_initial_tokens = PromptTokenCache(agent_loop.ct_build_initial_tokens)
            merge_inline(agent_loop)  # list concatenation without an executor round trip (fspo_verl.agent_loop.assistant_merge)
            self._shared_agent_loops[agent_name] = agent_loop
        return agent_loop

    async def _run_agent_loop(self, sampling_params: dict[str, Any], trajectory: dict[str, Any], *,
                              agent_name: str, trace: bool = True, **kwargs):
        with rollout_trace_attr(step=trajectory["step"], sample_index=trajectory["sample_index"],
                                rollout_n=trajectory["rollout_n"], validate=trajectory["validate"],
                                name="agent_loop", trace=trace):
            ticket = current_ticket()
            try:
                output = await self._agent_loop(agent_name).run(sampling_params, **kwargs)
            finally:
                if ticket is not None:
                    ticket.session_done()  # this session asks for no more generation
            return await self._agent_loop_postprocess(output, trajectory["validate"], **kwargs)

    async def _agent_loop_postprocess(self, output, validate, **kwargs) -> None:
        """verl's steps (reward, teacher log-probs, the reward copied to earlier outputs), then the write
        through :class:`BatchedPuts` instead of one ``async_kv_batch_put`` per trajectory."""
        outputs = output if isinstance(output, list) else [output]
        if not outputs:
            logger.warning("empty agent loop output for prompt %s_%s", kwargs.get("uid"), kwargs.get("session_id"))
            return
        await self._compute_score(outputs, kwargs=kwargs)
        final = outputs[-1]
        await self._compute_teacher_logprobs(final, prompt_ids=final.prompt_ids, response_ids=final.response_ids,
                                             validate=validate, sample_kwargs=kwargs)
        if final.reward_score is not None:
            for earlier in outputs[:-1]:
                earlier.reward_score = final.reward_score
                earlier.extra_fields["reward_extra_info"] = final.extra_fields["reward_extra_info"]
        await self._puts.put(*trajectory_records(self, outputs, validate, kwargs))

    async def _compute_score(self, outputs: list, kwargs: dict) -> None:
        """verl's ``AgentLoopWorker._compute_score``; with the in-process naive reward manager and one output,
        the reward comes from :func:`~fspo_verl.agent_loop.naive_reward.naive_reward` without the one-row
        ``DataProto`` (the same result, the same ``metrics.compute_score`` timing)."""
        handles = self.reward_loop_worker_handles
        final = outputs[-1] if outputs else None
        if (final is None or final.reward_score is not None or not handles
                or not isinstance(handles[0], InProcessRewardHandle)
                or not naive_reward_applies(handles[0].reward_manager, outputs)):
            return await super()._compute_score(outputs, kwargs=kwargs)
        timing: dict[str, float] = {}
        with simple_timer("compute_score", timing):
            result = await naive_reward(handles[0].reward_manager, final, kwargs)
            final.reward_score = result["reward_score"]
            final.extra_fields["reward_extra_info"] = result["reward_extra_info"]
        final.metrics.compute_score = timing["compute_score"]


class BatchedAgentLoopManager(AgentLoopManagerTQ):
    """verl's ``AgentLoopManagerTQ`` with :class:`BatchedAgentLoopWorker` workers and, for ``rollout.name=hf``,
    a :class:`CoalescingLLMServerClient`. Set by ``cluster=cpu`` and ``cluster=1gpu_hf`` (any platform)::

        actor_rollout_ref.rollout.agent.agent_loop_manager_class=fspo_verl.cpu.agent_loop.BatchedAgentLoopManager
    """

    def __init__(self, config, llm_client, teacher_client=None, reward_loop_worker_handles=None):
        if config.actor_rollout_ref.rollout.name == "hf" and type(llm_client) is LLMServerClient:
            llm_client = CoalescingLLMServerClient(config, load_balancer_handle=llm_client._load_balancer)
        super().__init__(config, llm_client, teacher_client, reward_loop_worker_handles)
        self.agent_loop_workers_class = BatchedAgentLoopWorker
        freeze_startup_heap("driver")  # the trainer is built; fit comes next (fspo_verl.common.gc_pauses)

    def rollout_progress_waiter(self) -> RolloutProgressWaiter:
        """What the replay buffer waits on between polls (:func:`fspo_verl.downsampling.polling.wait_on_rollout_progress`)."""
        return RolloutProgressWaiter(lambda: getattr(self, "agent_loop_workers", None))  # none yet: a plain sleep
