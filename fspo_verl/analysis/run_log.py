"""Reading a run's metrics from verl's file logger (``trainer.logger=[...,file]``).

verl's ``FileLogger`` (``verl/utils/tracking.py``) appends one JSON object per ``Tracking.log`` call to
``$VERL_FILE_LOGGER_PATH`` (default ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``)::

    {"step": 3, "data": {"critic/score/mean": 0.41, "response_length/mean": 812.5, ...}}

The same step can appear on several lines (validation metrics are logged separately, e.g. before the first
training step); ``read_run`` merges them, later lines winning on a repeated key.
"""

from __future__ import annotations

import json
import math
import re
from numbers import Real
from pathlib import Path

#: verl's validation metrics: mean reward or accuracy of each data source (``val-core/<source>/reward/mean@k``)
VAL_KEY = re.compile(r"^val-core/.+/(reward|acc)/mean@\d+$")

Run = dict[int, dict[str, float]]


def config_beside(metrics_path: str | Path) -> Path | None:
    """The ``config_<n>.yaml`` that ``fspo-verl train`` writes beside a run's ``metrics_<n>.jsonl`` (it may be
    missing: a plain verl run has none); None for a file not named ``metrics_<n>.jsonl``."""
    path = Path(metrics_path)
    name = path.name.replace("metrics_", "config_").replace(".jsonl", ".yaml")
    return path.with_name(name) if name.startswith("config_") else None


def read_run(path: str | Path) -> Run:
    """step -> {metric: value} from a verl file-logger JSONL; non-numeric values are skipped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not ``{"step": int, "data": {...}}`` (the message gives file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file. Pass the JSONL that verl's file logger wrote "
            "(trainer.logger=[console,file]; its path is $VERL_FILE_LOGGER_PATH, or "
            "$VERL_FILE_LOGGER_ROOT/<project_name>/<experiment_name>.jsonl)."
        )
    run: Run = {}
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                step, data = record["step"], record["data"]
                if isinstance(step, bool) or not isinstance(step, int) or not isinstance(data, dict):
                    raise TypeError("'step' must be an integer and 'data' an object")
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{path}:{lineno}: not a verl file-logger line; expected "
                    f'{{"step": <int>, "data": {{<metric>: <number>, ...}}}} ({err})'
                ) from None
            merged = run.setdefault(step, {})
            for key, value in data.items():
                if isinstance(value, Real) and not isinstance(value, bool):
                    merged[key] = float(value)
    return run


def series(run: Run, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, in step order, over the steps that logged it."""
    steps = sorted(s for s, metrics in run.items() if key in metrics)
    return steps, [run[s][key] for s in steps]


def keys(run: Run) -> set[str]:
    """Every metric name logged at any step."""
    return {k for metrics in run.values() for k in metrics}


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]
