"""Reading a composed Hydra/OmegaConf config by dotted key: the one lookup every driver-side check uses.

A leaf module (only OmegaConf), so that the check modules can import it without importing each other.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def config_value(config: DictConfig, dotted: str, default: Any = None) -> Any:
    """The (resolved) value at a dotted key of a composed config, or ``default`` when the key is absent."""
    return OmegaConf.select(config, dotted, default=default)
