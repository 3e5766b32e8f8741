"""The batched agent loop (``cluster=cpu``, ``cluster=1gpu_hf``): verl's agent-loop manager with one batched
generation call per step instead of one request per prompt.

- ``manager``: ``BatchedAgentLoopManager`` (named in configs as ``fspo_verl.cpu.agent_loop.BatchedAgentLoopManager``)
- ``rollout_progress``: the waiter a replay buffer blocks on until a worker's prompt groups settle
- ``prompt_tokens``, ``assistant_merge``, ``naive_reward``, ``storage_columns``, ``status_writes``, ``bursts``:
  the steps of one batch, one module each
"""
