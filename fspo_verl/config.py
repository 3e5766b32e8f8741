"""Old path of :mod:`fspo_verl.losses.config`, kept because configs name ``fspo_verl.config.FSPOPolicyLossConfig``."""

from fspo_verl.losses.config import *  # noqa: F401,F403
