"""Whether a config trains a critic: verl's own answer (``need_critic``), asked one way by every check."""

from __future__ import annotations

import warnings

from omegaconf import DictConfig


def critic_used(config: DictConfig, unreadable: bool | None = False) -> bool:
    """True when verl's workers build a critic for ``config`` (``verl.trainer.ppo.utils.need_critic``).

    need_critic's own warning about the critic is silenced: verl's ``validate_config`` says it once.
    ``unreadable`` is the answer when the keys need_critic reads are broken (the check that names those keys
    runs anyway): False for checks that then leave the critic out, True for one that should build it and name
    the problem, None to raise the error instead.
    """
    from verl.trainer.ppo.utils import need_critic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(need_critic(config))
        except Exception:  # noqa: BLE001 - a config without (valid) critic keys
            if unreadable is None:
                raise
            return unreadable
