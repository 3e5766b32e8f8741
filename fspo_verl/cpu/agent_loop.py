"""Old path of :mod:`fspo_verl.agent_loop.manager`, kept because configs name ``fspo_verl.cpu.agent_loop.BatchedAgentLoopManager``."""

from fspo_verl.agent_loop.manager import *  # noqa: F401,F403
