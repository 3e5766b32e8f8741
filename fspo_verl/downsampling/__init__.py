"""PODS/GFPO down-sampling: keep m of each prompt's n rollouts before the update.

- ``rules``: the selection rules and their registry (``DOWNSAMPLERS``, ``register_downsampler``)
- ``settings``: the ``fspo_verl.downsampling`` config section and the ``${fspo_mini_batch:P}`` resolver
- ``replay_buffer``: verl V1 replay buffers that apply a rule (``pkg://fspo_verl.pods`` names them)
- ``polling``: how often verl's V1 replay buffers look for finished rollouts
"""

from fspo_verl.downsampling.rules import (
    DOWNSAMPLERS,
    MIN_KEEP,
    DownsampleRule,
    get_downsampler,
    register_downsampler,
)

__all__ = ["DOWNSAMPLERS", "MIN_KEEP", "DownsampleRule", "get_downsampler", "register_downsampler"]
