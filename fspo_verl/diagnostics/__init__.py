"""Length-fairness metrics logged while training, one concept per module (offline analysis: :mod:`fspo_verl.analysis`).

- ``clip_rates``: per-loss "clipped" indicators, from the same tensors and functions the losses use.
- ``loss_hook``: the per-bin counts every fspo_verl loss emits (``actor/<loss>/seqs_len_*``, bins in
  :mod:`fspo_verl.losses.length_bins`), for verl's built-in losses, by wrapping the loss ``ppo_loss`` looks up.
- ``fairness_number``: one length-fairness number per loss and step from those counts (added in ``Tracking.log``).
- ``op_count``: the aten ops and host syncs a piece of torch code dispatches (a device-independent proxy of a
  loss's launch cost).

This package's ``__init__`` imports nothing: every verl process imports ``loss_hook`` and ``fairness_number`` on
plugin load.
"""
