"""``trainer.v1.sampler.poll_interval``: seconds between the replay buffer's checks for finished rollouts
(read by :mod:`fspo_verl.downsampling.polling`), checked in the driver."""

from __future__ import annotations

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.downsampling.polling import POLL_INTERVAL_KEY, poll_interval_error
from fspo_verl.preflight.registry import Findings, register_check


@register_check
def check_poll_interval(config: DictConfig) -> Findings:
    """``trainer.v1.sampler.poll_interval``: seconds between the replay buffer's checks (``fspo_verl.downsampling.polling``)."""
    value = config_value(config, POLL_INTERVAL_KEY)
    error = None if value is None else poll_interval_error(value)
    return Findings(errors=[error] if error else [])
