"""The ``hf`` rollout backend: generation with Hugging Face transformers behind verl's rollout interfaces.

- ``generation``: batched sampling with a transformers model (log-probs of the sampled tokens)
- ``server``: the Ray actor that serves generation requests, batching concurrent ones
- ``replica``: verl's ``RolloutReplica`` for ``rollout.name=hf`` (starts the servers)
- ``adapter``: the in-worker adapter verl's rollout registry names (``HFServerAdapter``)
"""
