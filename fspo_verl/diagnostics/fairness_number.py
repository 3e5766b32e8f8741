"""One number per step for how unequally a loss clips across response-length bins.

FSPO's paper (arXiv 2509.09177) defines a Length Reweighting Error (LRE) and proves that a small LRE keeps the
clipped update's direction close to the true one; its exact formula could not be read from the public copies.
We log a documented equivalent, from the step's per-bin counts (``fspo_verl.losses.length_bins``): with
n_k sequences and c_k clipped ones in bin k (bins with n_k = 0 left out),

    w_k  = n_k / sum_j n_j                 share of the step's sequences in bin k
    r_k  = c_k / n_k,  r = sum_k w_k r_k   clip rate of bin k, and overall
    a_k  = 1 - r_k,    a = 1 - r           share of bin k's sequences the band keeps
    length_reweighting_error = sqrt(sum_k w_k (a_k / a - 1)^2)
        the sequence-weighted RMS relative error of the length reweighting that clipping applies: clipping keeps
        bin k's share of the update in proportion a_k, so a_k / a - 1 is how much bin k is over- or
        under-weighted against the average. 0 when every bin keeps the same share.
    clip_rate_sd = sqrt(sum_k w_k (r_k - r)^2)      sequence-weighted spread of the per-bin clip rates
    clip_rate_cv = clip_rate_sd / r                 the same relative to the overall rate

All three are 0, never NaN, for a step with fewer than two non-empty bins, and when a = 0 or r = 0 (every bin
then has the same rate). The step's counts are verl's means over micro-batches and ranks of per-micro-batch
counts, so the ratios above are exact for the step.

Logged as ``<prefix>/length_reweighting_error``, ``<prefix>/clip_rate_sd_across_bins`` and
``<prefix>/clip_rate_cv_across_bins`` next to the counts of every loss that logs them (``actor/fspo``,
``actor/fspo_adaptive``, ``actor/sspo``, and verl's built-ins through ``fspo_verl.diagnostics.loss_hook``):
the plugin wraps ``verl.utils.tracking.Tracking.log``, which receives the step's reduced metrics in the driver,
and adds them to what every backend (console, file, tensorboard, ...) logs. verl's own metrics are unchanged.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from fspo_verl.common.verl_internals import is_patched, patch_once
from fspo_verl.losses.length_bins import BIN_KEY

TARGET_MODULE = "verl.utils.tracking"
SUFFIXES = ("length_reweighting_error", "clip_rate_sd_across_bins", "clip_rate_cv_across_bins")


def length_fairness(seqs: list[float], clipped: list[float]) -> dict[str, float]:
    """The three numbers of the module docstring from per-bin counts (same order, any scale)."""
    pairs = [(n, c) for n, c in zip(seqs, clipped) if n > 0 and math.isfinite(n) and math.isfinite(c)]
    total = sum(n for n, _ in pairs)
    if len(pairs) < 2 or total <= 0:
        return dict.fromkeys(SUFFIXES, 0.0)
    rates = [(n / total, c / n) for n, c in pairs]
    overall = sum(w * r for w, r in rates)
    sd = math.sqrt(sum(w * (r - overall) ** 2 for w, r in rates))
    kept = 1.0 - overall
    return {
        "length_reweighting_error": sd / kept if kept > 0 else 0.0,  # a_k/a - 1 = (r - r_k)/a
        "clip_rate_sd_across_bins": sd,
        "clip_rate_cv_across_bins": sd / overall if overall > 0 else 0.0,
    }


def step_fairness(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``<prefix>/<number>`` for every prefix of ``metrics`` with per-bin counts (``{}`` if none)."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in metrics.items():
        match = BIN_KEY.match(key)
        if match:
            try:
                found.setdefault(match["prefix"], {}).setdefault(f"{match['lo']}_{match['hi']}", {})[match["kind"]] = float(value)
            except (TypeError, ValueError):
                continue
    out: dict[str, float] = {}
    for prefix, bins in found.items():
        complete = [b for b in bins.values() if {"seqs", "clipped"} <= b.keys()]
        numbers = length_fairness([b["seqs"] for b in complete], [b["clipped"] for b in complete])
        out.update({f"{prefix}/{name}": value for name, value in numbers.items()})
    return out


def _patch(module: ModuleType) -> None:
    tracking = getattr(module, "Tracking", None)
    if tracking is None or is_patched(tracking.log):
        return
    original = tracking.log

    @functools.wraps(original)
    def log(self, data, step, backend=None):
        if isinstance(data, Mapping):
            extra = step_fairness(data)
            if extra:
                data = {**data, **extra}
        return original(self, data=data, step=step, backend=backend)

    patch_once(tracking, "log", lambda _verls: log)


def installed() -> bool:
    """Whether ``verl.utils.tracking`` is imported and its ``Tracking.log`` adds the fairness numbers."""
    module = sys.modules.get(TARGET_MODULE)
    return module is not None and is_patched(getattr(getattr(module, "Tracking", None), "log", None))


def register() -> None:
    """Wrap ``Tracking.log`` when ``verl.utils.tracking`` is imported (now, if it already is)."""
    from fspo_verl.common.import_hooks import when_imported

    when_imported(TARGET_MODULE, _patch)
