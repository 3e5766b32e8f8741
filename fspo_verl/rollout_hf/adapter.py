"""``HFServerAdapter``: the in-worker side of the ``hf`` rollout (verl's ``_ROLLOUT_REGISTRY[("hf", "async")]``).

verl builds it inside each actor worker (``ActorRolloutRefWorker.init_model``) and, after every step,
calls ``update_weights`` with a lazy generator of ``(hf_name, full_tensor)``; producing each tensor is an
all-gather over the FSDP group. Therefore every rank drains the generator (a rank that skips it hangs the
job), and only each replica's leader (rollout rank 0) keeps copies and ships them to its server in buckets of
``rollout.checkpoint_engine.update_weights_bucket_megabytes``. Copies are taken because a yielded tensor may
alias a live parameter: a host copy of a CPU tensor; a device-side clone, sent as a CUDA IPC handle, of a
tensor on a CUDA device (the server on the same node copies it device to device:
:func:`fspo_verl.rollout_hf.server.wire_tensor`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.utils import ensure_async_iterator

from fspo_verl.rollout_hf.replica import server_actor_name
from fspo_verl.rollout_hf.server import SharedDeviceTensor, wire_nbytes, wire_tensor


class HFServerAdapter(BaseRollout):
    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ["RANK"])
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        local_world_size = int(os.environ.get("RAY_LOCAL_WORLD_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1")))
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.node_rank = self.rollout_rank // local_world_size
        self.is_leader = self.rollout_rank == 0
        self._server: Optional[ray.actor.ActorHandle] = None

    def _server_handle(self) -> ray.actor.ActorHandle:
        # the server starts after init_model, so look it up on first use
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank, self.node_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None  # the server keeps its weights between phases: nothing to bring back

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(
        self, weights, global_steps: Optional[int] = None, wire_format: str = "named_tensors", **kwargs: Any
    ) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf rollout receives full tensors only; got wire_format={wire_format!r}")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("the hf rollout does not sync LoRA adapters; set actor_rollout_ref.model.lora.merge=true")
        limit = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        bucket: list[tuple[str, Any]] = []
        size = 0
        async for name, tensor in ensure_async_iterator(weights):  # every rank drains: each item is a collective
            if not self.is_leader:
                continue
            item = wire_tensor(tensor)
            bucket.append((name, item))
            size += wire_nbytes(item)
            if size >= limit:
                await self._send(bucket)
                bucket, size = [], 0
        if self.is_leader:
            if bucket:
                await self._send(bucket)
            await self._server_handle().commit_weights.remote(global_steps)

    async def _send(self, bucket: list[tuple[str, Any]]) -> None:
        """One ``receive_weights`` call; shared device clones are finished first and outlive the call."""
        if any(isinstance(item, SharedDeviceTensor) for _, item in bucket):
            torch.cuda.current_stream().synchronize()  # the server reads them on its own stream
        await self._server_handle().receive_weights.remote(bucket)
