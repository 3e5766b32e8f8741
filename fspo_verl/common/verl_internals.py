"""verl's internals that fspo_verl patches or reads privately, in one table, and the one "already patched" idiom.

:data:`TABLE` lists every verl name the plugin replaces (``patch``), reads or calls although verl does not
offer it as API (``private read``: an underscore name, a module constant, a registry's dict), overrides in a
subclass (``private override``: a private method verl calls on our subclass) or writes into (``registry
insert``). Each row says why and where (our module), and the verl versions it was checked against.

``fspo-verl doctor`` calls :func:`missing_targets`, which imports each row's module and walks its attribute
path in a fresh interpreter with verl's plugins off (so none of our patches runs), and names the first target
the installed verl lacks: a verl upgrade then fails in the doctor, not deep in a Ray worker.

Every patch site goes through :func:`patch_once`: it replaces ``owner.attr`` by ``make_replacement(original)``
and marks the replacement, so a second call (a re-import, a second hook) leaves it alone.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: verl versions this table (and the plugin's patches) was checked against
CHECKED_VERSIONS = ("0.9.1",)

KINDS = ("patch", "private read", "private override", "registry insert")

#: the attribute that marks a replacement made by :func:`patch_once`
MARK = "_fspo_verl_patched"


@dataclass(frozen=True)
class Internal:
    """One verl name we depend on: ``module`` (importable) and ``attr`` (a dotted path inside it)."""

    module: str
    attr: str
    kind: str
    why: str
    where: str  # our module that patches or reads it
    checked: tuple[str, ...] = CHECKED_VERSIONS

    @property
    def target(self) -> str:
        return f"{self.module}.{self.attr}"


_CPU = "fspo_verl.cpu"
_PATCHES = "fspo_verl.cpu.patches"
_LOOP = "fspo_verl.agent_loop.manager"
_TQ_WORKER = "AgentLoopWorkerTQ.__ray_actor_class__"
_V1 = "verl.trainer.ppo.v1"

TABLE: tuple[Internal, ...] = (
    # the cpu platform's fixes (fspo_verl.cpu.patches, installed only with VERL_PLATFORM=cpu)
    Internal("verl.utils.distributed", "initialize_global_process_group_ray", "patch",
             "cpu: backend 'cpu:gloo' instead of verl's 'cpu:gloo,cpu:gloo', which torch rejects", _PATCHES),
    Internal("verl.utils.distributed", "initialize_global_process_group", "patch",
             "cpu: the same backend string for torchrun-style initialisation", _PATCHES),
    Internal("verl.workers.engine_workers", "initialize_global_process_group_ray", "patch",
             "cpu: rebinds the copy this module imported before the hook ran", _PATCHES),
    Internal("verl.checkpoint_engine.base", "initialize_global_process_group_ray", "patch",
             "cpu: rebinds the copy this module imported before the hook ran", _PATCHES),
    Internal("verl.utils.fsdp_utils", "CPUOffloadPolicy", "patch",
             "cpu: pin_memory=False (pinning needs an accelerator)", _PATCHES),
    Internal("verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy", "patch",
             "cpu: the FSDP2 engine's own copy, unpinned when the engine class is looked up", _PATCHES),
    Internal("verl.workers.engine.base", "EngineRegistry.get_engine_cls", "patch",
             "cpu: FSDP engines resolve through their cuda registration", _PATCHES),
    Internal("verl.workers.engine.base", "EngineRegistry._engines", "private read",
             "cpu: the cuda registration the lookup falls back to", _PATCHES),
    Internal("verl.single_controller.ray.base", "RayResourcePool.get_placement_groups", "patch",
             "cpu: one logical CPU per worker bundle instead of max_colocate_count", _PATCHES),
    Internal("verl.utils.config", "validate_config", "patch",
             "cpu: check the config against Ray's resources before verl's own checks", _CPU),
    # registrations
    Internal("verl.trainer.ppo.core_algos", "POLICY_LOSS_REGISTRY", "registry insert",
             "fspo, fspo_adaptive, sspo; written directly so verl's own names are never shadowed",
             "fspo_verl.common.registry_guard"),
    Internal("verl.trainer.ppo.core_algos", "ADV_ESTIMATOR_REGISTRY", "registry insert",
             "opo_vectorized; our own entry is popped first so a re-import does not raise",
             "fspo_verl.common.registry_guard"),
    Internal("verl.plugin.platform.platform_manager", "PlatformRegistry.register", "registry insert",
             "the cpu platform", "fspo_verl.cpu.platform"),
    Internal("verl.workers.rollout.replica", "RolloutReplicaRegistry.register", "registry insert",
             "the hf rollout replica", _CPU),
    Internal("verl.workers.rollout.replica", "RolloutReplicaRegistry._registry", "private read",
             "the doctor lists the registered rollout replicas", "fspo_verl._registration"),
    Internal("verl.workers.rollout.base", "_ROLLOUT_REGISTRY", "registry insert",
             "the hf rollout adapter (verl has no register function for adapters)", _CPU),
    # training-time diagnostics and the V1 trainer
    Internal("verl.workers.utils.losses", "get_policy_loss_fn", "patch",
             "per-length-bin clip counts for verl's built-in losses (ppo_loss looks the loss up here)",
             "fspo_verl.diagnostics.loss_hook"),
    Internal("verl.utils.tracking", "Tracking.log", "patch",
             "adds the length-fairness number to every logged step", "fspo_verl.diagnostics.fairness_number"),
    Internal(f"{_V1}.trainer_base", "PPOTrainer._build_replay_buffer", "patch",
             "sets the configured poll_interval on the built replay buffer", "fspo_verl.downsampling.polling"),
    Internal(f"{_V1}.trainer_base", "PPOTrainer.fit", "patch",
             "the replay buffer waits on the agent loop's rollout progress", "fspo_verl.downsampling.polling"),
    Internal(f"{_V1}.replay_buffer", "ReplayBuffer._wait_for_next_poll", "patch",
             "per buffer: wake on rollout progress instead of sleeping poll_interval", "fspo_verl.downsampling.polling"),
    Internal(f"{_V1}.replay_buffer", "VERL_REPLAY_BUFFER_DEBUG_INTERVAL_SECONDS", "private read",
             "keeps verl's periodic buffer-state log in the replacement wait", "fspo_verl.downsampling.polling"),
    Internal(f"{_V1}.replay_buffer", "logger", "private read",
             "the logger that periodic log goes to", "fspo_verl.downsampling.polling"),
    # the batched agent loop
    Internal("verl.experimental.agent_loop.agent_loop", "_agent_loop_registry", "private read",
             "agent loop configs by name, instantiated once per stateless loop", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", _TQ_WORKER, "private read",
             "the Ray actor's class, subclassed by BatchedAgentLoopWorker", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._run_prompt", "private override",
             "runs a prompt's rollout.n sessions as one burst", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._run_agent_loop", "private override",
             "one shared agent loop per stateless class", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._agent_loop_postprocess", "private override",
             "writes trajectories to TransferQueue in batches", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._compute_score", "private override",
             "in-process naive reward for one-output trajectories; else verl's", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._compute_teacher_logprobs", "private read",
             "verl's postprocess step, called unchanged", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._compute_multi_modal_inputs", "private read",
             "the trajectory columns verl's postprocess writes", _LOOP),
    Internal(f"{_V1}.agent_loop_tq", f"{_TQ_WORKER}._compute_position_ids", "private read",
             "the trajectory columns verl's postprocess writes", _LOOP),
    Internal("verl.workers.rollout.llm_server", "LLMServerClient._acquire_server", "private read",
             "the coalescing client picks a server as verl's client does", _LOOP),
    Internal("verl.workers.rollout.llm_server", "LLMServerClient._release_server", "private read",
             "and releases it", _LOOP),
    Internal("verl.workers.rollout.llm_server", "LLMServerClient._vllm_request_id", "private read",
             "request ids in verl's form", _LOOP),
    # driver checks
    Internal("verl.utils.tracking", "Tracking.supported_backend", "private read",
             "trainer.logger names are checked before Ray starts", "fspo_verl.preflight.names"),
    Internal("verl.experimental.reward_loop.reward_manager.registry", "REWARD_MANAGER", "private read",
             "reward manager names are checked before Ray starts", "fspo_verl.preflight.names"),
)


def patch_once(owner: Any, attr: str, make_replacement: Callable[[Any], Any]) -> Any:
    """Replace ``owner.attr`` by ``make_replacement(original)``, marked, unless it is already our replacement.

    ``owner`` is a module or a class. For a classmethod/staticmethod the factory gets (and returns) the plain
    function, which is wrapped back in the same descriptor. The original stays wherever the factory keeps it
    (usually a closure). Returns the attribute in place afterwards (the replacement, new or earlier).
    """
    current = inspect.getattr_static(owner, attr)
    descriptor = type(current) if isinstance(current, (classmethod, staticmethod)) else None
    original = current.__func__ if descriptor else current
    if is_patched(original):
        return getattr(owner, attr)
    replacement = mark_patched(make_replacement(original))
    setattr(owner, attr, descriptor(replacement) if descriptor else replacement)
    return getattr(owner, attr)


def mark_patched(obj: Any) -> Any:
    """Mark ``obj`` (a function or class) as a replacement of ours; returns it."""
    setattr(obj, MARK, True)
    return obj


def is_patched(obj: Any) -> bool:
    """Whether ``obj`` (a function, bound method or class) is a replacement made by :func:`patch_once`."""
    return getattr(obj, MARK, False) is True


# Runs in a fresh interpreter with verl's plugins off: no fspo_verl import, so no patch of ours runs.
_WALK = r"""
import importlib, json, sys
missing = []
for module, attr in json.loads(sys.stdin.read()):
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as err:
        missing.append([f"{module}.{attr}", f"{type(err).__name__}: {err}"])
print(json.dumps(missing))
"""


def missing_details(table: Iterable[Internal] | None = None) -> list[tuple[str, str]]:
    """``(target, error)`` for each row of ``table`` (default :data:`TABLE`) the installed verl lacks, in order."""
    rows = TABLE if table is None else tuple(table)
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none")
    proc = subprocess.run(
        [sys.executable, "-c", _WALK],
        input=json.dumps([[row.module, row.attr] for row in rows]),
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # as a worker: the installed packages, not a checkout in the cwd
        timeout=600,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"checking verl's internals failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return [(target, error) for target, error in json.loads(lines[-1])]


def missing_targets(table: Iterable[Internal] | None = None) -> list[str]:
    """The dotted targets of ``table`` (default :data:`TABLE`) that do not exist in the installed verl."""
    return [target for target, _ in missing_details(table)]


def report_line(missing: list[str], verl_version: str, table: Iterable[Internal] | None = None) -> str:
    """The doctor's one line: all present, or the first missing target with the installed and checked versions."""
    rows = TABLE if table is None else tuple(table)
    checked = ", ".join(sorted({v for row in rows for v in row.checked}))
    if not missing:
        return f"verl internals:      all {len(rows)} targets present (checked against verl {checked})"
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (f"verl internals:      MISSING {missing[0]}{more} in the installed verl {verl_version}; fspo_verl was "
            f"checked against verl {checked}; fix: pip install verl=={CHECKED_VERSIONS[-1]}, or report this line "
            "to fspo_verl")


def markdown_table(table: Iterable[Internal] | None = None) -> str:
    """:data:`TABLE` as a markdown table (docs/verl-internals.md holds this text)."""
    rows = TABLE if table is None else tuple(table)
    out = ["| target | kind | why | where | verl checked |", "|---|---|---|---|---|"]
    out += [f"| `{r.target}` | {r.kind} | {r.why} | `{r.where}` | {', '.join(r.checked)} |" for r in rows]
    return "\n".join(out)
