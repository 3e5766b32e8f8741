"""The CPU backend on a Ray cluster that is already running (``RAY_ADDRESS`` set, or inside a Ray job).

verl's ``run_ppo`` calls ``ray.init(**ray_kwargs.ray_init)``. On a local start that is where the CPU preset's
logical ``num_cpus``/``num_gpus`` go; when connecting to a running cluster Ray refuses them (and
``resources``, ``labels``, ``object_store_memory``, ``_system_config``, ...): the cluster's nodes were started
with their own resources. So for an existing cluster:

- :func:`cluster_resources` reads the cluster's logical resources through Ray's state API (the GCS or the
  dashboard), without connecting a driver, so verl's own ``ray.init`` later is the process's first;
- :func:`drop_local_only_ray_init` sets those keys to null in the config before ``run_ppo`` reads it;
- :func:`forward_environment` puts the CPU backend's variables into ``ray_init.runtime_env.env_vars``: Ray
  workers of a running cluster do not inherit the driver's environment.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

#: ``ray.init`` arguments Ray rejects when connecting to a running cluster (Ray 2.60, worker.py ``init``)
LOCAL_ONLY_RAY_INIT_KEYS = ("num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "_system_config",
                            "_enable_object_reconstruction", "_node_name")
#: set by Ray's job supervisor in a job's entrypoint (ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR)
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
STATE_API_TIMEOUT_S = 20


class ClusterUnreachable(RuntimeError):
    """The running Ray cluster's resources could not be read."""


def existing_cluster_address(config: Any = None) -> str | None:
    """The address of the running Ray cluster ``ray.init`` will join, or None for a new local Ray.

    ``ray_kwargs.ray_init.address`` in the config, else ``RAY_ADDRESS`` (a GCS ``host:port``, ``auto``, or a
    dashboard ``http://host:8265``), else ``auto`` inside a Ray job. ``local`` means a new local Ray.
    """
    address = None
    if isinstance(config, DictConfig):
        address = OmegaConf.select(config, "ray_kwargs.ray_init.address", default=None)
    address = (address or os.environ.get("RAY_ADDRESS", "")).strip()
    if address == "local":
        return None
    if address:
        return address
    return "auto" if os.environ.get(RAY_JOB_ENV) else None


@functools.lru_cache(maxsize=8)
def cluster_resources(address: str) -> dict[str, float]:
    """Sum of the logical resources (``CPU``, ``GPU``, ...) of the alive nodes of the cluster at ``address``.

    Uses ``ray.util.state.list_nodes``: a GCS address is resolved to the dashboard through the GCS; an
    ``http://`` address is the dashboard itself. No driver connects, so nothing is left for ``ray.init``
    to trip over. Cached per address for the life of the process (the driver checks run more than once).
    """
    from ray.util.state import list_nodes

    try:
        # raise_on_missing_output=False: Ray 2.60 counts the DEAD nodes the filter leaves out as "truncated"
        # output and raises, so after a lost node every resubmission failed here
        nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], timeout=STATE_API_TIMEOUT_S,
                           raise_on_missing_output=False)
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        raise ClusterUnreachable(
            f"cannot read the resources of the Ray cluster at RAY_ADDRESS={address}: {type(err).__name__}: {err}. "
            "Fix: point RAY_ADDRESS at the cluster's dashboard (http://head:8265) or GCS (head:6379); with token "
            "authentication on, set RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on the cluster"
        ) from None
    total: dict[str, float] = {}
    for node in nodes:
        for key, value in (node.resources_total or {}).items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


def drop_local_only_ray_init(config: DictConfig) -> list[str]:
    """Set to null every ``ray_kwargs.ray_init`` key Ray rejects on a running cluster; returns ``key=value``
    of what was dropped (they size a local Ray only; the cluster's nodes have their own resources)."""
    ray_init = OmegaConf.select(config, "ray_kwargs.ray_init", default=None)
    dropped = []
    if ray_init is None:
        return dropped
    with open_dict(ray_init):
        for key in LOCAL_ONLY_RAY_INIT_KEYS:
            value = ray_init.get(key)
            if value is not None and value != {} and value is not False:
                dropped.append(f"ray_kwargs.ray_init.{key}={json.dumps(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value)}")
                ray_init[key] = None
    return dropped


def forward_environment(config: DictConfig, names: list[str]) -> dict[str, str]:
    """Add the driver's values of ``names`` (those set) to ``ray_kwargs.ray_init.runtime_env.env_vars``, which
    verl's ``run_ppo`` merges into the ``runtime_env`` of every TaskRunner and worker. Returns what was added."""
    values = {name: os.environ[name] for name in names if name in os.environ}
    for name, value in values.items():
        # force_add: verl's runtime_env node is a struct with no env_vars key
        OmegaConf.update(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{name}", value, force_add=True)
    return values
