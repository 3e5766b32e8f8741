"""FSPO constant calibration (``fspo-verl fairness calibrate``).

Calibration (``fspo-verl fairness calibrate``): for a target clip rate p, FSPO's rate under the CLT is

    P(clip) = E_L[ Phi((-c_low - m*sqrt(L)) / sigma) + Phi((m*sqrt(L) - c_high) / sigma) ]

where m = mu - (band centre per token): m = 0 for ``fspo_drift=kl`` (the centre tracks the batch mean) and
m = mu for ``fspo_drift=none``. With c_high = k*c_low (k = 4/3 keeps the ratio of the shipped defaults) the
rate falls monotonically in c_low, and bisection solves P(clip) = p. sigma comes from the user or from a
run's logged ``actor/ppo_kl``: if the rollout policy samples the tokens and d ~ N(mu, sigma^2), then
E_old[exp(d)] = 1 forces mu = -sigma^2/2, so KL(old||new) = E[-d] = sigma^2/2 and sigma = sqrt(2*ppo_kl).
This is an estimate: ``actor/ppo_kl`` averages over mini-batches and epochs, and the first mini-batch of
each step is exactly on-policy (ppo_kl = 0), so it understates the sigma of later mini-batches.

Length exponent (``--fit-exponent``, for ``loss_mode=fspo_adaptive``): a pilot run of ``algorithm=fspo`` (band
c_low*sqrt(L), c_high = kappa*c_low) clipped bin k at the pooled rate R_k over its n_k sequences. Only the
off-policy share f of the updates can clip (the first mini-batch of a step is on-policy), so the rate of an
off-policy update is r_k = R_k / f, f = 1 - 1/(mini-batches per step x ppo_epochs). If S | L ~ N(0, s^2 L^(2 beta)):

    r_k = Phi(-z_k) + Phi(-kappa z_k),   z_k = c_low sqrt(L_k) / sd_k   =>   log sd_k = log c_low + log L_k / 2 - log z_k
    fit log sd_k = log s + beta log L_k, weighted least squares with w_k = 1 / Var(log z_k),
        Var(log z_k) = r_k (1 - r_k) / (f n_k) / (z_k (phi(z_k) + kappa phi(kappa z_k)))^2     (binomial, delta method)

L_k is the bin's geometric middle (the open last bin reaches the run's longest response). Bins with R_k = 0 or
R_k >= f carry no z and are left out (named in the output). The band c*L^beta with c = z_p * s (z_p for the target
p) then clips p at every length; the printed overrides start ``fspo_adaptive`` from it
(``fspo_c_low=c``, ``fspo_adaptive_prior_exponent=beta``); the loss keeps refitting the exponent from the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fspo_verl.losses.config import FSPO_DRIFTS
from fspo_verl.losses.normal import _density, _phi, tail_quantile

#: c_high / c_low of the shipped defaults (0.0128 / 0.0096)
DEFAULT_HIGH_TO_LOW = 0.0128 / 0.0096


@dataclass
class ExponentFit:
    beta: float  # half-width exponent: sd(S | L) ~ s * L^beta
    beta_se: float  # its standard error from the weighted fit (nan with two bins)
    scale: float  # s
    used: list[str]  # bins in the fit
    skipped: list[str]  # bins without a usable rate (0, or at least the off-policy share)


def fit_length_exponent(
    names: list[str], lengths: list[float], seqs: list[float], rates: list[float | None], c_low: float,
    kappa: float = DEFAULT_HIGH_TO_LOW, offpolicy_share: float = 1.0,
) -> ExponentFit:  # fmt: skip
    """beta and s of the module docstring from a pilot fspo run's pooled per-bin clip rates."""
    xs, ys, ws, used, skipped = [], [], [], [], []
    for name, length, n, pooled in zip(names, lengths, seqs, rates):
        r = None if pooled is None else pooled / offpolicy_share
        if r is None or not 0.0 < r < 1.0 or n <= 0:
            skipped.append(name)
            continue
        z = tail_quantile(r, kappa)
        slope = z * (_density(z) + kappa * _density(kappa * z))
        var = r * (1.0 - r) / (offpolicy_share * n) / slope**2
        xs.append(math.log(length))
        ys.append(math.log(c_low) + 0.5 * math.log(length) - math.log(z))
        ws.append(1.0 / var)
        used.append(name)
    if len(xs) < 2:
        raise ValueError(
            f"fspo-verl fairness calibrate --fit-exponent: only {len(xs)} length bin(s) with a clip rate strictly "
            f"between 0 and 1 ({', '.join(used) or 'none'}; left out: {', '.join(skipped) or 'none'}); it needs two. "
            "Run the pilot longer, or with a narrower band (a lower fspo_c_low)"
        )
    total = sum(ws)
    x_bar, y_bar = sum(w * x for w, x in zip(ws, xs)) / total, sum(w * y for w, y in zip(ws, ys)) / total
    sxx = sum(w * (x - x_bar) ** 2 for w, x in zip(ws, xs))
    beta = sum(w * (x - x_bar) * (y - y_bar) for w, x, y in zip(ws, xs, ys)) / sxx
    resid = sum(w * (y - y_bar - beta * (x - x_bar)) ** 2 for w, x, y in zip(ws, xs, ys))
    # the weights are inverse variances: the slope's se is 1/sqrt(sxx), inflated by any lack of fit (chi2/dof > 1)
    dof = len(xs) - 2
    inflation = max(resid / dof, 1.0) if dof > 0 else float("nan")
    return ExponentFit(beta, math.sqrt(inflation / sxx), math.exp(y_bar - beta * x_bar), used, skipped)


def pilot_bins(path: str | Path) -> tuple[str, list[str], list[float], list[float], list[float | None]]:
    """(prefix, bin names, representative lengths, sequences, pooled clip rates) of a run's per-bin counts."""
    from fspo_verl.analysis.plotting import clip_rate_series, pooled_bin_rates
    from fspo_verl.analysis.run_log import finite, read_run, series

    run = read_run(path)
    found = clip_rate_series(run)
    if list(found) != ["actor/fspo"]:
        raise ValueError(
            f"{path}: --fit-exponent needs a pilot run of algorithm=fspo (its sqrt(L) band, actor/fspo/*_len_* counts); "
            f"the run logs per-bin counts of {sorted(found) or 'no loss'}"
        )
    names = list(found["actor/fspo"])
    longest = max(finite(series(run, "response_length/max")[1]), default=0.0)
    lengths = []
    for name in names:
        lo_s, hi_s = name.removeprefix("len_").split("_")
        lo = max(float(lo_s), 1.0)
        hi = max(longest, 2 * lo) if hi_s == "inf" else float(hi_s)
        lengths.append(math.sqrt(lo * hi))
    pooled = pooled_bin_rates(run, "actor/fspo", names)
    return "actor/fspo", names, lengths, [n for n, _, _ in pooled], [r for _, r, _ in pooled]


def predicted_fspo_clip_rate(
    c_low: float,
    c_high: float,
    sigma: float,
    mu: float = 0.0,
    drift: str = "none",
    lengths: list[float] | None = None,
    weights: list[float] | None = None,
) -> float:
    """FSPO's clip rate under the CLT (module docstring), averaged over ``lengths`` (default [1024]) with
    ``weights`` (default equal)."""
    offset = 0.0 if drift == "kl" else mu  # per-token distance between the true mean and the band centre
    lengths = lengths or [1024.0]
    weights = weights or [1.0] * len(lengths)
    total = 0.0
    for length, weight in zip(lengths, weights):
        shift = offset * math.sqrt(length)
        total += weight * (_phi((-c_low - shift) / sigma) + _phi((shift - c_high) / sigma))
    return total / sum(weights)


@dataclass
class Suggestion:
    c_low: float
    c_high: float
    predicted_rate: float
    sigma: float
    mu: float
    drift: str


def suggest_fspo_constants(
    target: float,
    sigma: float,
    mu: float = 0.0,
    drift: str = "none",
    lengths: list[float] | None = None,
    high_to_low: float = DEFAULT_HIGH_TO_LOW,
    weights: list[float] | None = None,
) -> Suggestion:
    """fspo_c_low and fspo_c_high = high_to_low * fspo_c_low giving clip rate ``target`` (CLT, bisection)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"fspo-verl fairness calibrate: --target={target!r} is invalid: give a clip rate in (0, 1), e.g. 0.1")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"fspo-verl fairness calibrate: sigma={sigma!r} is invalid: it must be > 0 (use --sigma or --run)")
    if not (math.isfinite(high_to_low) and high_to_low > 0):
        raise ValueError(f"fspo-verl fairness calibrate: --high-to-low={high_to_low!r} is invalid: give c_high/c_low > 0, e.g. 1.333")
    if drift not in FSPO_DRIFTS:
        raise ValueError(f"fspo-verl fairness calibrate: --drift={drift!r} is invalid: choose one of {', '.join(FSPO_DRIFTS)}")

    def rate(c: float) -> float:
        return predicted_fspo_clip_rate(c, high_to_low * c, sigma, mu, drift, lengths, weights)

    lo, hi = 0.0, sigma
    while rate(hi) > target:  # the rate falls to 0 as c grows; at c = 0 it is 1
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate(mid) > target else (lo, mid)
    c_low = 0.5 * (lo + hi)
    return Suggestion(c_low, high_to_low * c_low, rate(c_low), sigma, mu, drift)


def sigma_from_ppo_kl(ppo_kl: float) -> float:
    """sigma = sqrt(2 * ppo_kl), from KL(old||new) = sigma^2/2 for d ~ N(-sigma^2/2, sigma^2) (module docstring)."""
    if not (math.isfinite(ppo_kl) and ppo_kl > 0):
        raise ValueError(
            f"actor/ppo_kl={ppo_kl!r} cannot give a log-ratio scale: it must be > 0. The run may be exactly "
            "on-policy (one mini-batch, one epoch: the ratio is 1 and nothing is clipped); pass --sigma instead."
        )
    return math.sqrt(2.0 * ppo_kl)


def run_statistics(path: str | Path) -> tuple[float, list[float], list[float]]:
    """(median actor/ppo_kl over steps, lengths, weights) from a verl file-logger JSONL.

    Lengths: if the run logged our per-bin counts (``actor/{fspo,sspo}/seqs_len_*``), one length per bin,
    its geometric middle (the open last bin reaches the largest response_length/max), weighted by the
    bin's summed count; otherwise each step's ``response_length/mean`` with equal weights.
    """
    from fspo_verl.analysis.run_log import finite, keys, read_run, series

    run = read_run(path)
    kls = sorted(finite(series(run, "actor/ppo_kl")[1]))
    if not kls:
        raise ValueError(f"{path}: no actor/ppo_kl metric; pass --sigma instead of --run")
    ppo_kl = kls[len(kls) // 2]

    longest = max(finite(series(run, "response_length/max")[1]), default=0.0)
    lengths, weights = [], []
    for key in sorted(k for k in keys(run) if k.startswith("actor/") and "/seqs_len_" in k):
        lo_s, hi_s = key.rsplit("seqs_len_", 1)[1].split("_")
        lo = max(float(lo_s), 1.0)
        hi = max(longest, 2 * lo) if hi_s == "inf" else float(hi_s)
        count = sum(finite(series(run, key)[1]))
        if count > 0:
            lengths.append(math.sqrt(lo * hi))
            weights.append(count)
    if lengths:
        return ppo_kl, lengths, weights
    means = [m for m in finite(series(run, "response_length/mean")[1]) if m > 0]
    if not means:
        raise ValueError(f"{path}: no response_length/mean metric; cannot tell the run's lengths")
    return ppo_kl, means, [1.0] * len(means)
