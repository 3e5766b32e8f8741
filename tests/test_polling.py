"""trainer.v1.sampler.poll_interval reaches every V1 replay buffer verl's trainer builds (fspo_verl.downsampling.polling).

The buffers are built by verl's real ``PPOTrainer._build_replay_buffer`` (on a trainer object whose
``__init__`` is skipped: building the buffer needs only the config); ``sample()`` runs verl's real loop
against a scripted TransferQueue listing, and the test records the sleeps it takes between polls.
"""

from __future__ import annotations

import math
import time
import types

import pytest
from omegaconf import OmegaConf

import fspo_verl  # noqa: F401  (registers the wrapper, as `import verl` does through the plugin entry point)
from fspo_verl.downsampling.polling import (
    DEFAULT_POLL_INTERVAL_S,
    POLL_INTERVAL_KEY,
    poll_interval_error,
)
from fspo_verl.preflight.sampler import check_poll_interval

VERL_DEFAULT_POLL_INTERVAL_S = 2.0  # ReplayBuffer.__init__'s default in verl 0.9.1


@pytest.mark.parametrize("value", [0.05, 1, 2.0, 60])
def test_valid_intervals_pass(value) -> None:
    assert poll_interval_error(value) is None


@pytest.mark.parametrize("value", [0, -1, 0.0, math.nan, math.inf, 61, True, "fast", [0.1]])
def test_bad_intervals_name_key_value_and_fix(value) -> None:
    message = poll_interval_error(value)
    assert message is not None
    assert message.startswith(f"{POLL_INTERVAL_KEY}={value!r} ")
    assert f"set {POLL_INTERVAL_KEY}={DEFAULT_POLL_INTERVAL_S}" in message


def test_driver_check_on_composed_presets() -> None:
    from fspo_verl.cli.validate import compose

    for cluster in ("cpu", "8gpu"):
        config = compose([f"cluster={cluster}"])
        assert OmegaConf.select(config, POLL_INTERVAL_KEY) == DEFAULT_POLL_INTERVAL_S
        assert check_poll_interval(config).errors == []
    bad = check_poll_interval(compose([f"{POLL_INTERVAL_KEY}=-0.5"])).errors
    assert len(bad) == 1 and f"{POLL_INTERVAL_KEY}=-0.5 " in bad[0]


def _trainer(poll_interval=None, custom_sampler: str | None = None, mode: str = "sync"):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    sampler = {
        "max_off_policy_threshold": 8,
        "max_off_policy_strategy": "drop",
        "sync_refill_failed_groups": False,
        "custom_sampler": {"path": None, "name": None},
        "sampler_kwargs": {},
    }
    if custom_sampler:
        sampler["custom_sampler"] = {"path": "pkg://fspo_verl.downsampling.replay_buffer", "name": custom_sampler}
        sampler["sampler_kwargs"] = {"keep": 2}
    if poll_interval is not None:
        sampler["poll_interval"] = poll_interval
    trainer = object.__new__(PPOTrainerSync)
    trainer.config = OmegaConf.create({
        "trainer": {"v1": {"trainer_mode": mode, "sync": {}, "colocate_async": {}, "sampler": sampler}},
        "algorithm": {"filter_groups": None},
        "data": {"train_batch_size": 2, "gen_batch_size": None},
    })
    trainer.trainer_mode = mode
    return trainer


def test_wrapper_is_installed_on_verls_trainer() -> None:
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from fspo_verl.common.verl_internals import is_patched

    assert is_patched(PPOTrainer._build_replay_buffer)


@pytest.mark.parametrize("mode", ["sync", "colocate_async"])
def test_verls_own_buffer_gets_the_configured_interval(mode: str) -> None:
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

    buffer = _trainer(0.2, mode=mode)._build_replay_buffer()
    assert type(buffer) is (ReplayBuffer if mode == "sync" else ReplayBufferAsync)
    assert buffer.poll_interval == 0.2
    # without the key, verl's own default stays: plain verl runs are unchanged
    assert _trainer(None, mode=mode)._build_replay_buffer().poll_interval == VERL_DEFAULT_POLL_INTERVAL_S


def test_pods_buffer_polls_fast_by_default_and_follows_the_setting() -> None:
    assert _trainer(None, custom_sampler="PODSReplayBuffer")._build_replay_buffer().poll_interval == DEFAULT_POLL_INTERVAL_S
    assert _trainer(0.3, custom_sampler="PODSReplayBuffer")._build_replay_buffer().poll_interval == 0.3


def test_bad_interval_fails_when_the_buffer_is_built() -> None:
    with pytest.raises(ValueError, match=rf"{POLL_INTERVAL_KEY}=0 "):
        _trainer(0)._build_replay_buffer()


def test_sample_sleeps_the_configured_interval_between_polls(monkeypatch) -> None:
    """verl's real sync ``sample()``: two polls see the group running, the third finished."""
    import verl.trainer.ppo.v1.replay_buffer as rb

    uid = "abc123"
    listings = iter([
        {"train": {uid: {"is_prompt": True, "status": "running", "global_steps": 1}}},
        {"train": {uid: {"is_prompt": True, "status": "running", "global_steps": 1}}},
        {"train": {uid: {"is_prompt": True, "status": "finished", "global_steps": 1},
                   f"{uid}_0_0": {"status": "success", "seq_len": 5}}},
    ])
    sleeps: list[float] = []
    monkeypatch.setattr(rb, "tq", types.SimpleNamespace(kv_list=lambda: next(listings), kv_clear=lambda **kw: None))
    monkeypatch.setattr(rb, "time", types.SimpleNamespace(sleep=sleeps.append, time=lambda: 0.0))

    buffer = _trainer(0.05)._build_replay_buffer()
    batch, _ = buffer.sample(global_steps=1, partition_id="train", batch_size=1)
    assert batch.keys == [f"{uid}_0_0"]
    assert sleeps == [0.05, 0.05]


def test_fit_makes_the_buffer_wait_on_a_managers_rollout_progress() -> None:
    """A manager with rollout_progress_waiter(): the buffer's wait between polls goes to the waiter (with at
    least the fallback timeout), not to time.sleep; a manager without one leaves verl's wait alone."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from fspo_verl.downsampling.polling import PROGRESS_FALLBACK_S

    waits = []

    class Waiter:
        def wait(self, timeout):
            waits.append(timeout)

    class Manager:
        def rollout_progress_waiter(self):
            return Waiter()

    trainer = _trainer(0.05)
    trainer.replay_buffer = trainer._build_replay_buffer()
    verl_wait = trainer.replay_buffer._wait_for_next_poll
    # verl's own fit fails at once on this half-built trainer; what the wrapper did before it is checked
    try:
        PPOTrainer.fit(trainer, object())
    except Exception:  # noqa: BLE001 - verl's fit needs a whole trainer; only the wrapper's effect matters
        pass
    assert trainer.replay_buffer._wait_for_next_poll == verl_wait  # no waiter offered: untouched
    try:
        PPOTrainer.fit(trainer, Manager())
    except Exception:  # noqa: BLE001
        pass
    last = trainer.replay_buffer._wait_for_next_poll("train", time.time())
    assert waits == [max(0.05, PROGRESS_FALLBACK_S)] and last <= time.time()
