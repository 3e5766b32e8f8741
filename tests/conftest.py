"""Shared fixtures: verl's real Hydra config and the actor config verl builds from it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import verl  # noqa: F401  - loads our entry point exactly as a worker does
from verl.utils.config import omega_conf_to_dataclass

VERL_CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")

FSPO_TARGET = "actor_rollout_ref.actor.policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig"

# Enough to pass verl's validate_config on one "GPU" without touching a model or a dataset.
BASE_OVERRIDES = [
    "algorithm.adv_estimator=grpo",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "data.train_batch_size=4",
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
]


def compose_verl(overrides: list[str]):
    """verl's own ppo_trainer.yaml, composed by Hydra with ``overrides`` (as ``main_ppo`` would)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=BASE_OVERRIDES + list(overrides))


def actor_config(overrides: list[str]):
    """The frozen actor config dataclass that verl's workers hand to the policy loss."""
    return omega_conf_to_dataclass(compose_verl(overrides).actor_rollout_ref.actor)


@pytest.fixture(scope="session")
def fspo_actor_config():
    return actor_config([FSPO_TARGET, "actor_rollout_ref.actor.policy_loss.loss_mode=fspo"])


#: the tests that run verl's trainer or start a cluster (each a multi-process Ray or SLURM job on the machine's
#: cores), as paths relative to the root: under ``pytest -n 2`` one worker runs them one after the other
TRAINER_TESTS = ("tests/e2e/", "tests/cluster/")


# Ray starts its workers at niceness 15 (RAY_worker_niceness): beside an in-process test at niceness 0 on the other
# xdist worker, a trainer run's Ray processes got a few percent of a core each (a run starting for minutes). The
# tests' Ray clusters and jobs (local, `ray start`, SLURM, which inherit this environment) run at the tests' priority.
os.environ.setdefault("RAY_worker_niceness", "0")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one intra-op thread each. With torch's default (a thread per core) both of a
    # worker's threads can land on one core when the other is busy, and each parallel op then spins waiting for
    # a thread that is not running (a demo-asset build took minutes instead of seconds that way). Ray's workers
    # set their own thread count; subprocesses are not affected.
    torch.set_num_threads(1)


if importlib.util.find_spec("xdist") is not None:
    from xdist.scheduler import LoadScopeScheduling

    class TrainerRunsOnOneWorker(LoadScopeScheduling):
        """``make test`` runs ``pytest -n 2``: every test under :data:`TRAINER_TESTS` is one work unit, run by one
        worker in collection order (two trainer runs at once would share 2 cores between two multi-process jobs),
        and every other test is a unit of its own, so the other worker runs the in-process tests beside them while
        the trainer runs wait on their Ray and SLURM processes. (xdist's ``--dist loadgroup`` would do this from an
        ``xdist_group`` mark, but it renames node ids in a way pytest 9.2 ignores.)"""

        def _split_scope(self, nodeid: str) -> str:
            return "trainer runs" if nodeid.startswith(TRAINER_TESTS) else nodeid

    def pytest_xdist_make_scheduler(config, log):
        return TrainerRunsOnOneWorker(config, log)


@pytest.fixture(scope="session", autouse=True)
def demo_cache(tmp_path_factory) -> Path:
    """One cache of the demo's assets (two warm-started tiny models, the task parquets) for the whole session.

    Building it is two supervised passes (about 30 s on 2 cores); every test that runs or composes the demo (the e2e
    runs, the Ray, SLURM and submitit jobs, the recipes' validation, ``fspo_verl.demo.ensure_assets()`` with its
    default) reads it through ``FSPO_VERL_CACHE``, so it is built once, lazily, by the first one that needs it,
    instead of once per module or job. Set here for the session, so a developer's own ``~/.cache/fspo_verl`` is
    never read or written.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, shared by the xdist workers (builds are under a file lock)
    root = base / "fspo_verl_cache"
    root.mkdir(exist_ok=True)
    saved = os.environ.get("FSPO_VERL_CACHE")
    os.environ["FSPO_VERL_CACHE"] = str(root)
    yield root
    if saved is None:
        os.environ.pop("FSPO_VERL_CACHE", None)
    else:
        os.environ["FSPO_VERL_CACHE"] = saved


@pytest.fixture(scope="session")
def built_demo_cache(demo_cache) -> Path:
    """``demo_cache`` with the assets built, here in the test process: a test that launches jobs (Ray, SLURM,
    submitit, a sweep) asks for this, so that no job's own time limit has to cover the supervised passes.

    The assets are built lazily per key (``fspo_verl.demo.DemoAssets``), so each task the jobs use is read here:
    countdown (the default data preset) and next_digit (``data=synthetic_cpu``, the lean jobs). checksum is built
    by its own tests only."""
    from fspo_verl.demo import TASKS, ensure_assets

    assets = ensure_assets(demo_cache)
    for task in JOB_TASKS:
        model_key, prefix, _ = TASKS[task]
        for key in (model_key, f"{prefix}train_files", f"{prefix}val_files"):
            assert Path(assets[key]).exists(), key
    return demo_cache


#: the demo tasks whose assets the job-launching tests use
JOB_TASKS = ("countdown", "next_digit")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield
