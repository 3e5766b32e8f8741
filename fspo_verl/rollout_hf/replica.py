"""``HFReplica``: the ``hf`` entry of verl's ``RolloutReplicaRegistry`` (used in the TaskRunner process).

In hybrid mode (the V1 sync trainer's default) each replica owns ``tensor_model_parallel_size`` actor
workers and starts one :class:`~fspo_verl.rollout_hf.server.HFRolloutServer` per node, pinned to the workers'
node. The actor name ``hf_server_<replica>_<node>`` is how the in-worker adapter finds it
(:mod:`fspo_verl.rollout_hf.adapter`). Control calls (wake_up, sleep, abort, resume) fan out through the base
class.

On an accelerator platform (verl's ``get_device_name()`` is not ``cpu``) the server sees its node's workers'
accelerators, as verl's vLLM server does: Ray is told not to set its visible devices (the platform's
``RAY_EXPERIMENTAL_NOSET_*`` variables) and the workers' accelerator ids, the first worker's first, are in its
environment from the start (``runtime_env``; set later, a CUDA runtime already initialised would ignore them),
so its device 0, where it loads the model (:func:`fspo_verl.rollout_hf.server.server_placement`), is the first
worker's. The server claims no GPU of Ray's: it shares the workers' GPUs, as a hybrid vLLM server does.
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


def _node_and_accelerators(worker_self) -> tuple[str, list[str]]:
    """(node id, accelerator ids Ray gave this worker), run inside a worker by ``__ray_call__``."""
    from verl.utils.device import get_resource_name

    context = ray.get_runtime_context()
    return context.get_node_id(), [str(i) for i in context.get_accelerator_ids().get(get_resource_name(), [])]


def server_runtime_env(device_name: str, node_accelerators: list[list[str]]) -> dict:
    """Ray ``runtime_env`` of a node's server: none on cpu; on an accelerator, the platform's NOSET variables
    and its visible-devices variable set to the node's workers' accelerator ids, in worker order (the first is
    the server's device 0)."""
    if device_name == "cpu":
        return {}
    from verl.plugin.platform import get_platform

    platform = get_platform()
    env_vars = {**{var: "1" for var in platform.ray_noset_envvars()}, **platform.rollout_env_vars()}
    ids = list(dict.fromkeys(i for ids in node_accelerators for i in ids))
    if ids:
        env_vars[platform.visible_devices_envvar()] = ",".join(ids)
    return {"env_vars": env_vars}


class HFReplica(RolloutReplica):
    """Rollout replica backed by Hugging Face transformers, on the workers' accelerator or the CPU (hybrid mode only)."""

    async def launch_servers(self) -> None:
        from fspo_verl.rollout_hf.server import HFRolloutServer

        if self.rollout_mode != RolloutMode.HYBRID or self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError(
                f"rollout.name=hf supports the hybrid rollout of the policy only (got mode {self.rollout_mode}, "
                f"reward_model={self.is_reward_model}, teacher={self.is_teacher_model}); colocated and standalone "
                "modes need a CPU checkpoint engine. Use rollout.name=vllm on a GPU cluster for those."
            )
        if len(self.workers) != self.world_size:
            raise RuntimeError(f"hf replica {self.replica_rank}: {len(self.workers)} workers for world size {self.world_size}")
        from verl.utils.device import get_device_name

        infos = await asyncio.gather(*[worker.__ray_call__.remote(_node_and_accelerators) for worker in self.workers])
        device_name = get_device_name()
        server_cls = ray.remote(HFRolloutServer)
        for node_rank in range(self.nnodes):
            first = node_rank * self.gpus_per_replica_node
            runtime_env = server_runtime_env(
                device_name, [ids for _, ids in infos[first : first + self.gpus_per_replica_node]]
            )
            options = {"runtime_env": runtime_env} if runtime_env else {}
            server = server_cls.options(
                name=server_actor_name(self.replica_rank, node_rank),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=infos[first][0], soft=False),
                num_cpus=0,  # the workers hold the logical CPUs; the server only sleeps between batches
                max_concurrency=self.max_concurrency,
                **options,
            ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank, node_rank=node_rank)
            self.servers.append(server)
        await asyncio.gather(*[server.get_global_steps.remote() for server in self.servers])  # wait until loaded
        self._server_handle = self.servers[0]
        self._server_address = server_actor_name(self.replica_rank, 0)  # only a key for the load balancer


def load_hf_replica() -> type[HFReplica]:
    return HFReplica
