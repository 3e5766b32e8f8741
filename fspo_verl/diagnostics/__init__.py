"""Length-fairness diagnostics, one concept per module.

- ``length_bins``: response-length bins and the per-bin counts every loss emits (``actor/<loss>/seqs_len_*``).
- ``clip_rates``: per-loss "clipped" indicators, from the same tensors and functions the losses use.
- ``loss_hook``: the same per-bin counts for verl's built-in losses, by wrapping the loss ``ppo_loss`` looks up.
- ``simulation``: clip rate per length bin under a CLT model of the token log-ratios (``fspo-verl fairness simulate``).
- ``calibration``: FSPO constants for a target clip rate (``fspo-verl fairness calibrate``).
- ``fairness_cli``: the command line of the two above.
- ``run_log``: reading verl's JSONL metrics log.
- ``plotting``: PNGs of reward, response length and per-bin clip rate from a run log (``fspo-verl plot``).
- ``comparison``: several methods' runs side by side: clip rate per bin pooled over seeds, spread, rewards.

This package's ``__init__`` imports nothing: ``fspo_verl.losses`` imports ``length_bins`` on plugin load.
"""
