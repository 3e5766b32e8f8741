"""The standard normal distribution, as the length-aware losses use it: CDF, density, two-sided tail quantile.

``fspo_adaptive`` (:mod:`.length_spread`) turns a target clip rate into its band constant with
:func:`tail_quantile`; offline calibration (:mod:`fspo_verl.analysis.calibration`) uses the same functions.
"""

from __future__ import annotations

import math


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _density(x: float) -> float:
    """Standard normal density."""
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def tail_quantile(rate: float, kappa: float = 1.0) -> float:
    """z > 0 with Phi(-z) + Phi(-kappa*z) = rate (bisection; the left side falls from 1 to 0 as z grows)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _phi(-mid) + _phi(-kappa * mid) > rate else (lo, mid)
    return 0.5 * (lo + hi)
