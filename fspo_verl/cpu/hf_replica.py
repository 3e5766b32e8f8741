"""``HFReplica``: the ``hf`` entry of verl's ``RolloutReplicaRegistry`` (used in the TaskRunner process).

In hybrid mode (the V1 sync trainer's default) each replica owns ``tensor_model_parallel_size`` actor
workers and starts one :class:`~fspo_verl.cpu.hf_server.HFRolloutServer` per node, pinned to the workers'
node. The actor name ``hf_server_<replica>_<node>`` is how the in-worker adapter finds it
(:mod:`fspo_verl.cpu.hf_rollout`). Control calls (wake_up, sleep, abort, resume) fan out through the base
class.
"""

from __future__ import annotations

import asyncio

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

BACKEND_NAME = "hf"


def server_actor_name(replica_rank: int, node_rank: int) -> str:
    """Ray actor name of a server; verl's adapters use ``f"{rollout.name}_server_{replica}_{node}"``."""
    return f"{BACKEND_NAME}_server_{replica_rank}_{node_rank}"


class HFReplica(RolloutReplica):
    """Rollout replica backed by Hugging Face transformers on CPU (hybrid mode only)."""

    async def launch_servers(self) -> None:
        from fspo_verl.cpu.hf_server import HFRolloutServer

        if self.rollout_mode != RolloutMode.HYBRID or self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError(
                f"rollout.name=hf supports the hybrid rollout of the policy only (got mode {self.rollout_mode}, "
                f"reward_model={self.is_reward_model}, teacher={self.is_teacher_model}); colocated and standalone "
                "modes need a CPU checkpoint engine. Use rollout.name=vllm on a GPU cluster for those."
            )
        if len(self.workers) != self.world_size:
            raise RuntimeError(f"hf replica {self.replica_rank}: {len(self.workers)} workers for world size {self.world_size}")
        node_ids = await asyncio.gather(
            *[worker.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for worker in self.workers]
        )
        server_cls = ray.remote(HFRolloutServer)
        for node_rank in range(self.nnodes):
            server = server_cls.options(
                name=server_actor_name(self.replica_rank, node_rank),
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=node_ids[node_rank * self.gpus_per_replica_node], soft=False
                ),
                num_cpus=0,  # the workers hold the logical CPUs; the server only sleeps between batches
                max_concurrency=self.max_concurrency,
            ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank, node_rank=node_rank)
            self.servers.append(server)
        await asyncio.gather(*[server.get_global_steps.remote() for server in self.servers])  # wait until loaded
        self._server_handle = self.servers[0]
        self._server_address = server_actor_name(self.replica_rank, 0)  # only a key for the load balancer


def load_hf_replica() -> type[HFReplica]:
    return HFReplica
