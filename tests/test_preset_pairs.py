"""Every algorithm preset composes with every data preset on the default cluster=cpu, as
``fspo-verl validate algorithm=A data=D`` checks it. The pairs are read from the config directories, so a preset
is checked when it arrives. All pairs run in this one process (``fspo_verl.cli.validate.validate``): a ``fspo-verl``
subprocess per pair would pay the 7-15 s import of verl and torch each time.

The CPU tasks (``fspo_verl.demo.overrides.DATA_ASSETS``) pass outright; any other data preset (gsm8k, math) may
report only that its data files are missing, which ``recipes/data/`` makes.
"""

from __future__ import annotations

import functools

import pytest
import yaml
from omegaconf import OmegaConf

from fspo_verl.cli.presets import presets
from fspo_verl.cli.validate import compose, validate
from fspo_verl.demo.overrides import DATA_ASSETS
from fspo_verl.downsampling.settings import derived_mini_batch_size

# a safety net only (each pair takes about 1 s on 2 idle cores); never what is asserted
pytestmark = pytest.mark.timeout(120)

PAIRS = [(algorithm, data) for algorithm in presets("algorithm") for data in presets("data")]
MISSING_FILE = "the file does not exist"
ACTOR = "actor_rollout_ref.actor"


@pytest.fixture(autouse=True)
def _files_are_checked_here(monkeypatch):
    """Validate as a user on this machine does: absent data files are errors (no 'files live elsewhere')."""
    monkeypatch.delenv("FSPO_VERL_FILES_ELSEWHERE", raising=False)


def _kept_per_prompt(config: dict) -> int:
    """Samples a prompt holds after down-sampling: keep with a PODS/GFPO sampler, else rollout.n."""
    sampler = config["trainer"]["v1"]["sampler"]
    n = config["actor_rollout_ref"]["rollout"]["n"]
    return (sampler.get("sampler_kwargs") or {}).get("keep") or n if sampler.get("custom_sampler") else n


@functools.cache
def _default_updates_per_step(data: str) -> float:
    """Updates per step of the default algorithm (fspo, no down-sampling) on ``data``."""
    return _updates_per_step(yaml.safe_load(validate([f"data={data}"])[0]))


def _updates_per_step(config: dict) -> float:
    """Optimizer updates per step: the step's samples over a mini-batch's (verl: ppo_mini_batch_size x n)."""
    samples = config["data"]["train_batch_size"] * _kept_per_prompt(config)
    return samples / (config["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"] * config["actor_rollout_ref"]["rollout"]["n"])


@pytest.mark.parametrize("algorithm, data", PAIRS)
def test_every_algorithm_composes_with_every_data_preset(algorithm, data):
    resolved, found = validate([f"algorithm={algorithm}", f"data={data}"])
    if data in DATA_ASSETS:
        assert found.errors == [], found.errors
        config = yaml.safe_load(resolved)
        # the mini-batch is derived, not hand-set: down-sampling keeps the data preset's updates per step
        # (exact on-policy OPO takes one update per batch by design)
        want = 1 if algorithm == "opo" else _default_updates_per_step(data)
        assert _updates_per_step(config) == want, (config["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"], want)
    else:
        others = [e for e in found.errors if not (e.startswith(("data.train_files=", "data.val_files=")) and MISSING_FILE in e)]
        # the default model (tiny_cpu, 256 positions) cannot hold these tasks' prompt + response (512 + 1024 for gsm8k,
        # 1024 + 4096 for math): one line says so, and a model preset for the task leaves only the missing files
        assert len(others) == 1 and others[0].startswith("data.max_response_length="), others
        assert "choose a model with more positions" in others[0], others
        resolved, found = validate([f"algorithm={algorithm}", f"data={data}", "model=qwen2_5_0_5b_instruct"])
        others = [e for e in found.errors if not (e.startswith(("data.train_files=", "data.val_files=")) and MISSING_FILE in e)]
        assert others == [], others


@pytest.mark.parametrize("algorithm, n, keep, mini", [
    # data=countdown_cpu: 16 prompts a step, 8 per update; n x mini must hold 8 prompts' kept samples
    ("pods", 64, 16, 2),  # 8 x 16 / 64
    ("pods_128_32", 128, 32, 2),  # 8 x 32 / 128
    ("gfpo", 16, 8, 4),  # 8 x 8 / 16
    ("grpo", 16, None, 8),  # no down-sampling: the task's 8 prompts per update
])
def test_the_countdown_mini_batch_is_derived_from_n_and_keep(algorithm, n, keep, mini):
    config = compose([f"algorithm={algorithm}"])
    sampler = config.trainer.v1.sampler
    assert (config.actor_rollout_ref.rollout.n, OmegaConf.select(sampler, "sampler_kwargs.keep")) == (n, keep)
    assert config.actor_rollout_ref.actor.ppo_mini_batch_size == config.critic.ppo_mini_batch_size == mini


def test_a_users_keep_rederives_the_mini_batch_and_a_hand_set_one_is_still_checked():
    keep8 = compose(["algorithm=pods", "trainer.v1.sampler.sampler_kwargs.keep=8"])
    assert keep8.actor_rollout_ref.actor.ppo_mini_batch_size == 1  # 8 x 8 / 64
    _, found = validate(["algorithm=pods", f"{ACTOR}.ppo_mini_batch_size=8"])  # the value before derivation
    assert any(f"{ACTOR}.ppo_mini_batch_size=8 counts prompts" in e and f"set {ACTOR}.ppo_mini_batch_size=2" in e
               for e in found.errors), found.errors


def _root(n: int, keep, batch: int, sampler: bool = True, mode: str = "sync", sync_step: int = 1):
    v1 = {"trainer_mode": mode, mode: {"parameter_sync_step": sync_step}, "sampler": {}}
    if sampler:
        v1["sampler"] = {"custom_sampler": {"path": "pkg://fspo_verl.pods"}, "sampler_kwargs": {"keep": keep}}
    return OmegaConf.create({"trainer": {"v1": v1}, "actor_rollout_ref": {"rollout": {"n": n}},
                             "data": {"train_batch_size": batch}})


@pytest.mark.parametrize("root, prompts_per_update, want", [
    (_root(64, 16, 256), 64, 16),  # gsm8k + pods: 64 x 16 / 64
    (_root(16, 4, 64), 16, 4),  # docs/downsampling.md's worked example, four updates per step
    (_root(16, 4, 64), 64, 16),  # ... one update per step
    (_root(16, 6, 16), 8, 3),  # 8 x 6 / 16 = 3: 3 x 16 = 48 divides 16 x 6 = 96
    (_root(16, 5, 16), 8, 1),  # 8 x 5 / 16 = 2.5 fits no step of 80 samples; nearest that does: 1 (5 updates of 16)
    (_root(8, 6, 32, mode="separate_async", sync_step=4), 8, 6),  # 8 prompts a sample(): 8 x 6 / 8
    (_root(64, 16, 16, sampler=False), 8, 8),  # no down-sampling: unchanged
    (_root(64, None, 16), 8, 8),  # keep unset: unchanged, the driver check names keep
    (_root(16, 16, 16), 8, 8),  # keep >= n: unchanged, the driver check names keep
    (_root(16, 3, 1), 8, 8),  # 1 prompt x 3 kept cannot hold a mini-batch of 16k: unchanged, the check says why
])
def test_derived_mini_batch_size_by_hand(root, prompts_per_update, want):
    assert derived_mini_batch_size(prompts_per_update, _root_=root) == want
