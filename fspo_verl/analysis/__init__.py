"""Offline analysis of finished runs: nothing here runs inside a training process.

Kept apart from :mod:`fspo_verl.diagnostics` (the metrics a run logs while it trains, imported by every verl
worker on plugin load) because these modules read run logs after the fact and pull in matplotlib.

- ``run_log``: reading verl's JSONL metrics log
- ``plotting``: PNGs of reward, response length and per-bin clip rate from a run log (``fspo-verl plot``)
- ``sweep_plot``: one figure per metric comparing a sweep's jobs
- ``comparison``: several methods' runs side by side: clip rate per bin pooled over seeds, spread, rewards
- ``claims``: the measured claims of ``docs/claims.md`` from their runs
- ``simulation``: clip rate per length bin under a CLT model of the token log-ratios (``fspo-verl fairness simulate``)
- ``calibration``: FSPO constants for a target clip rate (``fspo-verl fairness calibrate``)
- ``fairness_cli``: the command line of the two above
"""
