"""The ``hf`` rollout server: a Ray actor that serves token-in/token-out generation with transformers.

It follows the contract of verl's vLLM server as the V1 agent loop uses it: ``generate(prompt_ids,
sampling_params, request_id, ...) -> TokenOutput`` with response ids, per-token log-probs,
``stop_reason`` and ``extra_fields["global_steps"]`` (the weight version). Concurrent requests are
collected by a batching loop and decoded together (:func:`fspo_verl.rollout_hf.generation.generate_batch`) in a
worker thread, so that control calls (weight sync, wake-up, abort) keep getting through.

Weights arrive from the actor after every step through the in-worker adapter
(:mod:`fspo_verl.rollout_hf.adapter`): ``receive_weights(bucket)`` copies each tensor into the parameter of that
name (tied weights answer to every name, as in ``named_parameters(remove_duplicate=False)``);
``commit_weights(global_steps)`` checks that every parameter was written and sets the weight version.
The server starts from the checkpoint on disk; the step-0 sync overwrites it before any generation.

Device and dtype (:func:`server_placement`): on verl's ``cpu`` platform the model lives on the CPU in float32
with one torch thread (it shares the cores with the FSDP workers). On any other platform verl knows
(``verl.utils.device.get_device_name()``: cuda, npu, ...) it lives on the accelerator of the replica's first
worker (device 0: the replica starts the server with its workers' devices visible, first worker first) in
``actor_rollout_ref.rollout.dtype``: verl's key for the rollout engine's dtype, documented there as "align
with the actor model's FSDP/Megatron type", default bfloat16, the default of the FSDP actor's
``mixed_precision.param_dtype`` too. Weights that are already on a CUDA device arrive as CUDA IPC handles
(:class:`SharedDeviceTensor`) and are copied device to device, without a trip through host memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from typing import Any, Optional

import torch

from fspo_verl.common.gc_pauses import freeze_startup_heap
from fspo_verl.rollout_hf.generation import SamplingSpec, generate_batch

logger = logging.getLogger(__name__)

#: if set, a directory where every server writes ``replica<r>_step<N>.json`` (its parameter digests) after
#: each weight sync; the end-to-end test compares them with the actor's checkpoint of step N
DIGEST_DIR_ENV = "FSPO_VERL_HF_DIGEST_DIR"

#: if "1", the server acknowledges weight syncs without applying them: a stale server, used by the end-to-end
#: test as the negative control of on-policy generation (never set it in a real run)
FREEZE_ENV = "FSPO_VERL_HF_FREEZE_WEIGHTS"

#: if set, a directory where every server appends one JSON line per decoded batch to ``replica<r>.jsonl``:
#: weight version, sampling spec, prompts, max_tokens, produced lengths and the wall seconds of the batched
#: ``generate_batch`` call. ``benchmarks/bench_step_time.py`` reads it to measure the generation floor.
#: Off (no file, no overhead) unless set.
TIMING_DIR_ENV = "FSPO_VERL_HF_TIMING_DIR"

#: most requests decoded in one batch. Our choice: 256 covers one replica's share of a demo step (64 prompts x 8
#: samples over 2 replicas). One batch pays the per-decode-step overhead (Python, kernel launches) once for
#: all its rows, and since finished rows leave the batch (:func:`generate_batch`) a row costs only the steps
#: it decodes, so fewer, fuller batches save CPU the agent loop needs.
MAX_BATCH_SIZE = 256

#: how long a batch keeps collecting requests after its first one arrived (seconds), unless it fills up first.
#: Our choice: verl's agent loop sends a step's requests one Ray call at a time, a few ms apart; without a
#: window the server decoded ~2 requests per batch (about 240 batches, ~3 CPU-s per demo step), with 50 ms it
#: decodes several times fewer, fuller batches. 50 ms is below 2% of a 3-s step.
BATCH_WINDOW_S = 0.05

#: queued after the requests of one ``generate_many`` call: the batch being collected is complete
_FLUSH = object()


def rollout_dtype(value: Any) -> torch.dtype:
    """torch dtype of ``actor_rollout_ref.rollout.dtype`` (bfloat16/bf16, float16/fp16, float32/fp32)."""
    from verl.utils.torch_dtypes import PrecisionType

    try:
        return PrecisionType.to_dtype(str(value).removeprefix("torch.") if not isinstance(value, torch.dtype) else value)
    except RuntimeError:
        raise ValueError(
            f"actor_rollout_ref.rollout.dtype={value!r} is not a dtype the hf rollout can load: use bfloat16, "
            "float16 or float32"
        ) from None


def server_placement(dtype: Any, device_name: str | None = None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of the server's model: (cpu, float32) on verl's cpu platform, else (<device>:0,
    ``rollout.dtype``). ``device_name`` defaults to verl's ``get_device_name()`` (the platform this process runs
    on); index 0 is the first device the server sees, which the replica sets to its first worker's."""
    if device_name is None:
        from verl.utils.device import get_device_name

        device_name = get_device_name()
    if device_name == "cpu":
        return torch.device("cpu"), torch.float32
    return torch.device(device_name, 0), rollout_dtype(dtype)


class SharedDeviceTensor:
    """A CUDA tensor sent to another process on the same node as an IPC handle, not as bytes.

    ``share`` takes ``torch.multiprocessing.reductions.reduce_tensor`` of the tensor (the handle torch's own
    multiprocessing sends); the receiver's :meth:`materialize` maps the same device memory. The sender must
    keep the tensor alive, and finished writing it, until the receiver has copied it: the adapter holds its
    bucket and synchronises its stream before the call, and awaits the server's copy.
    """

    def __init__(self, rebuild: Any, args: tuple, shape: tuple[int, ...], nbytes: int) -> None:
        self.rebuild, self.args, self.shape, self.nbytes = rebuild, args, shape, nbytes

    @classmethod
    def share(cls, tensor: torch.Tensor) -> SharedDeviceTensor:
        from torch.multiprocessing.reductions import reduce_tensor

        rebuild, args = reduce_tensor(tensor)
        return cls(rebuild, args, tuple(tensor.shape), tensor.numel() * tensor.element_size())

    def materialize(self) -> torch.Tensor:
        return self.rebuild(*self.args)


#: device types whose tensors travel as IPC handles; others (npu, xpu, ...) are copied through host memory
IPC_DEVICE_TYPES = frozenset({"cuda"})


def wire_tensor(tensor: torch.Tensor, ipc_device_types=IPC_DEVICE_TYPES, share=SharedDeviceTensor.share):
    """What the adapter sends for one weight: a private host copy of a CPU tensor (a yielded tensor may alias a
    live parameter), or, for a tensor on an IPC-capable device, a device-side clone shared by handle."""
    tensor = tensor.detach()
    if tensor.device.type in ipc_device_types:
        return share(tensor.clone())  # stays on its device
    return tensor.to("cpu", copy=True)


def wire_nbytes(item: Any) -> int:
    return item.nbytes if isinstance(item, SharedDeviceTensor) else item.numel() * item.element_size()


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's float32 bytes: equal digests mean bit-equal values (any source dtype <= fp32)."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def load_model(path: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False) -> torch.nn.Module:
    """The causal LM at ``path`` in ``dtype`` on ``device``, in eval mode, with PyTorch's sdpa attention."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code
    )
    return model.to(device).eval()


class HFRolloutServer:
    """One ``hf`` rollout server (a Ray actor, one per replica node). See the module docstring."""

    def __init__(
        self,
        config: Any,
        model_config: Any,
        replica_rank: int,
        node_rank: int = 0,
        device_name: str | None = None,
    ) -> None:
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig, RolloutConfig

        if not isinstance(config, RolloutConfig):
            config = omega_conf_to_dataclass(config)
        if not isinstance(model_config, HFModelConfig):
            model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.config = config
        self.model_config = model_config
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.device, self.dtype = server_placement(getattr(config, "dtype", "bfloat16"), device_name)
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # shares the cores with the FSDP workers
        self.model = load_model(model_config.local_path, self.device, self.dtype, model_config.trust_remote_code)
        self._params = dict(self.model.named_parameters(remove_duplicate=False))
        self._received: set[int] = set()  # ids of parameters written since the last commit
        tokenizer = model_config.tokenizer
        eos = model_config.generation_config.eos_token_id if model_config.generation_config else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else next(iter(self.eos_token_ids)))
        self.max_model_len = int(config.max_model_len or (config.prompt_length + config.response_length))
        self.global_steps: Optional[int] = None
        self._generator = torch.Generator(device=self.device).manual_seed(int(config.seed) + replica_rank)
        self._model_lock = threading.Lock()  # generation and weight writes never overlap
        self._queue: asyncio.Queue | None = None
        self._batcher: asyncio.Task | None = None
        self._admission_open = asyncio.Event()
        self._admission_open.set()
        freeze_startup_heap(f"hf rollout server {replica_rank}")  # no full-heap GC pause inside a step

    # ------------------------------------------------------------------ generation
    def _max_tokens(self, prompt_len: int, sampling_params: dict) -> int:
        """vLLM server's rule: ``max_tokens`` if given, else what fits the response and total budgets."""
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ValueError(
                f"prompt of {prompt_len} tokens leaves no room within max_model_len={self.max_model_len}; "
                "raise actor_rollout_ref.rollout.prompt_length or shorten the prompts"
            )
        if "max_tokens" in sampling_params:
            wanted = int(sampling_params["max_tokens"])
        elif "max_new_tokens" in sampling_params:
            wanted = int(sampling_params["max_new_tokens"])
        else:
            wanted = min(self.config.response_length, self.config.prompt_length + self.config.response_length - prompt_len)
        return max(1, min(wanted, room))

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        **kwargs: Any,
    ):
        if image_data or video_data:
            raise NotImplementedError("the hf rollout backend is text-only; use rollout.name=vllm for multimodal")
        await self._admission_open.wait()
        params = dict(sampling_params)
        future = self._enqueue(prompt_ids, params)
        return self._token_output(await future, params)

    async def generate_many(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Several requests in one Ray call, decoded in the same batch; returns their ``TokenOutput`` in order.

        Each request is a dict of :meth:`generate`'s keywords (``prompt_ids``, ``sampling_params``,
        ``request_id``). The batching loop starts decoding as soon as all of them are queued instead of waiting
        out ``BATCH_WINDOW_S``. :class:`fspo_verl.agent_loop.manager.CoalescingLLMServerClient` sends an agent-loop
        worker's concurrent requests this way: one Ray call per server instead of one per response.
        """
        for request in requests:
            if request.get("image_data") or request.get("video_data"):
                raise NotImplementedError("the hf rollout backend is text-only; use rollout.name=vllm for multimodal")
        await self._admission_open.wait()
        params = [dict(r["sampling_params"]) for r in requests]
        futures = [self._enqueue(r["prompt_ids"], p) for r, p in zip(requests, params)]
        self._ensure_batcher().put_nowait(_FLUSH)
        results = await asyncio.gather(*futures)
        return [self._token_output(result, p) for result, p in zip(results, params)]

    def _enqueue(self, prompt_ids: list[int], params: dict[str, Any]) -> asyncio.Future:
        prompt_ids = [int(t) for t in prompt_ids]
        future = asyncio.get_running_loop().create_future()
        item = (prompt_ids, self._max_tokens(len(prompt_ids), params), SamplingSpec.from_params(params), future)
        self._ensure_batcher().put_nowait(item)  # an unbounded queue: put_nowait never blocks
        return future

    def _token_output(self, result: tuple[list[int], list[float]], params: dict[str, Any]):
        from verl.workers.rollout.replica import TokenOutput

        token_ids, log_probs = result
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if params.get("logprobs") else None,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    def _ensure_batcher(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())
        return self._queue

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        while True:
            pending = await self._collect_batch()
            by_spec: dict[SamplingSpec, list] = {}
            for item in pending:
                by_spec.setdefault(item[2], []).append(item)
            for spec, items in by_spec.items():
                try:
                    results = await asyncio.to_thread(self._run_batch, spec, items)
                except Exception as err:  # noqa: BLE001 - delivered to every waiting request
                    for *_, future in items:
                        if not future.done():
                            future.set_exception(err)
                    continue
                for (*_, future), result in zip(items, results):
                    if not future.done():
                        future.set_result(result)

    async def _collect_batch(self) -> list:
        """The next batch: the first queued request, then whatever arrives within ``BATCH_WINDOW_S`` (at most
        ``MAX_BATCH_SIZE``), or up to a flush mark (:meth:`generate_many`). Cancelling ``Queue.get`` on the
        deadline loses no item (asyncio removes an item only when ``get`` returns)."""
        assert self._queue is not None
        first = await self._queue.get()
        while first is _FLUSH:  # a flush mark left behind by a batch that had already filled up
            first = await self._queue.get()
        pending = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_WINDOW_S
        while len(pending) < MAX_BATCH_SIZE:
            if not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _FLUSH:  # generate_many queued all its requests: decode now
                    break
                pending.append(item)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if item is _FLUSH:
                break
            pending.append(item)
        return pending

    def _run_batch(self, spec: SamplingSpec, items: list) -> list[tuple[list[int], list[float]]]:
        prompts, max_tokens = [item[0] for item in items], [item[1] for item in items]
        with self._model_lock:
            start = time.perf_counter()
            results = generate_batch(
                self.model, prompts, max_tokens, spec, self.eos_token_ids, self.pad_token_id, self._generator
            )
            seconds = time.perf_counter() - start
        timing_dir = os.environ.get(TIMING_DIR_ENV)
        if timing_dir:
            self._record_batch(timing_dir, spec, prompts, max_tokens, results, seconds)
        return results

    def _record_batch(self, timing_dir: str, spec: SamplingSpec, prompts: list[list[int]], max_tokens: list[int],
                      results: list, seconds: float) -> None:
        record = {
            "replica": self.replica_rank,
            "global_steps": self.global_steps,
            "end_time": time.time(),
            "seconds": seconds,
            "spec": [spec.temperature, spec.top_p, spec.top_k, spec.repetition_penalty],
            "prompts": prompts,
            "max_tokens": max_tokens,
            "response_lens": [len(ids) for ids, _ in results],
        }
        os.makedirs(timing_dir, exist_ok=True)
        with open(os.path.join(timing_dir, f"replica{self.replica_rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ weight sync
    async def receive_weights(self, bucket: list[tuple[str, torch.Tensor]]) -> int:
        """Copy a bucket of (hf_name, full tensor) into the model; returns how many tensors were written."""
        return await asyncio.to_thread(self._write_weights, bucket)

    def _write_weights(self, bucket: list[tuple[str, Any]]) -> int:
        """Copy each (name, tensor or :class:`SharedDeviceTensor`) into its parameter, converting the dtype; a
        shared device tensor is copied device to device and the copy has finished when this returns (the
        sender may free it then)."""
        frozen = os.environ.get(FREEZE_ENV) == "1"
        shared = False
        with self._model_lock, torch.no_grad():
            for name, item in bucket:
                if isinstance(item, SharedDeviceTensor):
                    tensor, shared = item.materialize(), True
                else:
                    tensor = item
                param = self._params.get(name)
                if param is None:
                    raise KeyError(f"hf rollout server: the actor sent weight {name!r}, which the server model lacks")
                if param.shape != tensor.shape:
                    raise ValueError(f"hf rollout server: {name} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}")
                if not frozen:
                    param.copy_(tensor)
                self._received.add(id(param))
            device = self._params_device()
            if shared and device.type == "cuda":
                torch.cuda.synchronize(device)
        return len(bucket)

    def _params_device(self) -> torch.device:
        return next(iter(self._params.values())).device

    def commit_weights(self, global_steps: Optional[int]) -> None:
        """End of one sync: every parameter must have been written; then set the weight version."""
        missing = [n for n, p in self._params.items() if id(p) not in self._received]
        self._received.clear()
        if missing:
            raise RuntimeError(f"hf rollout server: weight sync left {len(missing)} parameters stale, e.g. {missing[:3]}")
        if global_steps is not None:
            self.global_steps = global_steps
        digest_dir = os.environ.get(DIGEST_DIR_ENV)
        if digest_dir:
            record = {"replica": self.replica_rank, "global_steps": global_steps, "digests": self._digests()}
            path = os.path.join(digest_dir, f"replica{self.replica_rank}_step{global_steps}.json")
            os.makedirs(digest_dir, exist_ok=True)
            with open(path, "w") as f:
                json.dump(record, f)

    def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def weight_digests(self) -> dict[str, str]:
        """name -> :func:`tensor_digest` of every parameter (tests compare them with the actor's)."""
        return await asyncio.to_thread(self._digests)

    def _digests(self) -> dict[str, str]:
        with self._model_lock:
            return {name: tensor_digest(p) for name, p in self.model.named_parameters()}

    def get_global_steps(self) -> Optional[int]:
        return self.global_steps

    # ------------------------------------------------------------------ control calls (nothing offloaded between phases)
    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        # Requests already batched finish (a CPU batch is short); new ones wait until resume_generation.
        self._admission_open.clear()
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        self._admission_open.set()

    async def wake_up(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def sleep(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None
