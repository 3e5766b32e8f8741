"""An ``HFRolloutServer`` with a real tiny model, built without Ray or verl's config dataclasses: only the
attributes the batching loop, ``generate``/``generate_many`` and the batch recorder read."""

from __future__ import annotations

import asyncio
import threading

import torch

from fspo_verl.demo.model import build_model, build_tokenizer
from fspo_verl.rollout_hf.server import HFRolloutServer


class _RolloutConfig:
    response_length, prompt_length = 6, 8


def bare_server(replica_rank: int = 0, global_steps: int = 3) -> HFRolloutServer:
    """Call it inside the event loop that will use it (the admission gate is an asyncio.Event)."""
    tokenizer = build_tokenizer()
    server = object.__new__(HFRolloutServer)
    server.model = build_model(tokenizer, seed=0).eval()
    server.eos_token_ids = {tokenizer.eos_token_id}
    server.pad_token_id = tokenizer.pad_token_id
    server._generator = torch.Generator().manual_seed(0)
    server._model_lock = threading.Lock()
    server.replica_rank, server.global_steps = replica_rank, global_steps
    server.config, server.max_model_len = _RolloutConfig(), 64
    server._queue = server._batcher = None
    server._admission_open = asyncio.Event()
    server._admission_open.set()
    return server
