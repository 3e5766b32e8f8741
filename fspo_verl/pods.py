"""Old path of :mod:`fspo_verl.downsampling.replay_buffer`, kept because configs name ``pkg://fspo_verl.pods``."""

from fspo_verl.downsampling.replay_buffer import *  # noqa: F401,F403
