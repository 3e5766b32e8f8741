"""Pre-flight checks: everything a run depends on, looked up in the driver before Ray starts.

One registry (:mod:`.registry`: ``Findings``, ``@register_check``, ``run_checks``); each other module is one
mechanism and registers its checks there on import. ``fspo-verl validate`` and ``fspo-verl train`` run them
all through ``run_checks(config)``, which imports the modules of ``registry.CHECK_MODULES`` on first use:

- :mod:`.combinations` settings across sections our presets rely on (exact on-policy, sequence losses,
                       micro-batch vs mini-batch, tensor parallelism vs node size)
- :mod:`.downsampling` PODS/GFPO settings and the batch geometry after keeping m of n
- :mod:`.sampler`      the replay buffer's poll interval
- :mod:`.sections`     build verl's config dataclass of every section the workers build, as they build it
- :mod:`.names`        every name the workers look up in a registry (loss, estimator, rollout, logger,
                       reward manager, resume mode, ...), with the registered names in the message
- :mod:`.data_files`   the parquet footer of every local data file against the columns verl reads, and the
                       first row group's rows (prompts as chat messages, ground truth, no nulls)
- :mod:`.model_files`  the local model's config and tokenizer, loaded as the workers load them, and its
                       weight files (present; safetensors headers parse)
- :mod:`.values`       one table of domains (counts, clip ratios, top_p, coefficients, frequencies, ...)
                       and one of relations (batch vs mini-batch, lengths vs the model's positions)
- :mod:`.places`       output and checkpoint folders writable (a probe file); loggers' packages and credentials
- :mod:`.checkpoints`  the checkpoint a resume would load: present, complete and readable
- :mod:`.resolution`   the config resolved in place, as verl's TaskRunner resolves it (a resolver's list
                       default passes ``validate``'s printout and fails there)
- :mod:`.cpu`          the CPU backend's resources (registered by :mod:`fspo_verl.cpu` when it is selected)
- :mod:`.locality`     FSPO_VERL_FILES_ELSEWHERE=1: validating away from the driver, absent paths only warn

Every message is one line (:func:`.messages.problem`): the key, its value, what goes wrong, and the fix.
No check starts Ray, reads a whole data file, or touches the network. This ``__init__`` imports nothing, so
that :mod:`fspo_verl.cpu` can import :mod:`.cpu` on plugin load without loading every check.
"""
