"""How the sequence log-ratio spreads with response length: the estimator behind ``fspo_adaptive``.

FSPO (arXiv 2509.09177) assumes S_i = sum_t d_{i,t} ~ N(L_i*mu, L_i*sigma^2), so a half-width c*sqrt(L_i) clips
every length alike. In real training Var(S | L) can grow faster or slower than L (long answers hold the slips
whose tokens an update moves most), and the sqrt(L) band then clips one end of the length range most. This
module estimates v(L) = E[(S - L*mu)^2 | L] from the data and turns it into a band with one clip rate p at
every length:

    e_i       = S_i - L_i*mu                                   centred log-ratio (detached; mu as fspo_drift)
    per bin k of ``length_bins``, an exponential moving sum over updates (memory M sequences):
    n_k      <- g*n_k + #{i in k},  g = exp(-N_update / M)    (N_update: sequences of the update, all ranks)
    l_k      <- g*l_k + sum_{i in k} log L_i                   x_k = l_k / n_k, mean log length of bin k
    u_k      <- g*u_k + sum_{i in k} (log L_i)^2                s2_k = u_k / n_k - x_k^2, its spread within the bin
    q_k      <- g*q_k + sum_{i in k} e_i^2                      q_k / n_k = m2_k, second moment of e in bin k
    y_k       = log m2_k - alpha^2*s2_k/2                       m2_k = a*mean(L^alpha) ~ a*exp(alpha*x_k + alpha^2*s2_k/2)
    fit       y_k ~ b + alpha*x_k, weights n_k, ridge n0*(alpha - 2*beta0)^2, alpha in [0, 4] (a few fixed-point
              passes, as y_k depends on alpha)
    residual  r_k = n_k/(n_k + n0) * (y_k - b - alpha*x_k)                       (0 for a bin without data)
    log v(L)  = N/(N + n0) * (b + alpha*log L + r_k(L)) + n0/(N + n0) * log v0(L),   N = sum_k n_k
    v0(L)     = (c_low / z)^2 * L^(2*beta0)                    the prior: FSPO's sqrt(L) band itself at beta0 = 1/2
    s_k       <- s_k + eta * (c_k - p*n'_k) / max(p*n'_k, 1)  per update with spread, clamped to [-3, 3]
              (n'_k sequences of bin k in the update, c_k of them outside the band before the update; s_k = 0 at
              first, eta = ``fspo_adaptive_rate_gain``; a Robbins-Monro step whose fixed point is rate p in bin k)
    lo_i      = L_i*mu - z * exp(s_k) * sqrt(v(L_i)),   hi_i = L_i*mu + kappa * z * exp(s_k) * sqrt(v(L_i))
    z solves  Phi(-z) + Phi(-kappa*z) = p,  kappa = c_high / c_low

Why this estimator:
- Second moments pool exactly across micro-batches, updates and data-parallel ranks (they are sums), so the
  statistics are all-reduced as five numbers per bin (n, sum log L, sum (log L)^2, sum e^2, sum L) and every
  rank holds the same band.
- A power law a*L^alpha is the CLT's own family (alpha = 1 is FSPO) and extrapolates to bins that are empty
  now; the shrunk per-bin residual r_k lets a bin with enough data (n_k >> n0) follow its own spread when the
  power law does not fit, while a bin with few sequences leans on the fit. The ridge keeps alpha near the
  prior's 2*beta0 (FSPO's 1, or the exponent ``fspo-verl fairness calibrate`` fitted on a pilot run) when the
  data cannot identify it (one bin with data).
- The quantile z of a Gaussian with the same second moment gives rate p in every bin when S | L is Gaussian
  (the CLT's premise); with heavier tails the rate differs from p but alike in every bin with the same shape.
  Real log-ratios are not Gaussian and their shape changes with length (on the countdown task a short answer's
  S is mostly ~0 with a rare large slip, a long one's sums many slips): the second moment then sets a band too
  wide for short answers and too narrow for long ones. The per-bin scale s_k corrects that from the band's own
  clip counts: the step is linear in c_k, so its mean is 0 exactly when bin k clips at p, whatever the shape of
  S | L (a stochastic-approximation quantile tracker, Robbins and Monro 1951). Counts are sums, all-reduced
  with the moments, so every rank holds the same s_k. eta = 0 gives the second-moment band alone.
- With Var(S | L) = sigma^2 * L the fit is b = log sigma^2, alpha = 1, r_k = 0, so the band is
  (z*sigma, kappa*z*sigma) * sqrt(L): FSPO's band at the constants ``fspo-verl fairness calibrate`` suggests
  for the target p (``fspo_verl.analysis.calibration.suggest_fspo_constants`` with mu = 0).

Degenerate updates: on the first mini-batch of a step the policy is the rollout policy, d = 0 and S_i = 0.
An update whose per-token scale sqrt(sum_i e_i^2 / sum_i L_i) is below ``tol`` (over all ranks) leaves the
statistics as they were; the band is then the previous estimate, or the prior v0 before any, never zero-width.
Bins never divide by an empty count (a bin with n_k = 0 has no data term), and with no data at all v = v0.

Where the state lives: one estimator per actor process (``estimator_for``), keyed by the settings; verl calls
the policy loss in that process on every micro-batch. It is NOT saved in verl's checkpoint: after a resume
the first update with spread rebuilds it (the prior applies until then). Statistics use detached values.

Shapes: bs = sequences of a micro-batch, K+1 = number of length bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fspo_verl.losses.length_bins import bin_index
from fspo_verl.losses.normal import tail_quantile

#: alpha is clamped to this range (our choice: a spread shrinking with length or growing faster than L^4 is
#: not a length law we trust to extrapolate)
ALPHA_RANGE = (0.0, 4.0)
#: the tracker's log-scale per bin stays within +-this, and one update moves it by at most RATE_STEP_MAX (our
#: choice: a factor e^3 = 20 either way is beyond any correction the second-moment band needed in our runs)
LOG_SCALE_MAX, RATE_STEP_MAX = 3.0, 0.5
#: fixed-point passes of the fit with the within-bin length correction (alpha moves < 1e-3 after 3 on our tests)
_JENSEN_ITERATIONS = 4


@dataclass(frozen=True)
class SpreadSettings:
    """What the estimator needs from ``FSPOPolicyLossConfig`` (see its docstring for each field)."""

    edges: tuple[int, ...]
    target_rate: float
    c_low: float
    c_high: float
    memory: float
    prior_seqs: float
    tol: float
    sync_ranks: bool
    prior_exponent: float = 0.5
    rate_gain: float = 0.0  # eta of the per-bin rate tracker; 0 = the second-moment band alone

    @classmethod
    def from_config(cls, hp) -> SpreadSettings:
        return cls(
            edges=tuple(int(e) for e in hp.length_bins),
            target_rate=float(hp.fspo_target_clip_rate),
            c_low=float(hp.fspo_c_low),
            c_high=float(hp.fspo_c_high),
            memory=float(hp.fspo_adaptive_memory),
            prior_seqs=float(hp.fspo_adaptive_prior_seqs),
            tol=float(hp.fspo_adaptive_onpolicy_tol),
            sync_ranks=bool(hp.fspo_adaptive_sync_ranks),
            prior_exponent=float(hp.fspo_adaptive_prior_exponent),
            rate_gain=float(hp.fspo_adaptive_rate_gain),
        )

    @property
    def kappa(self) -> float:
        return self.c_high / self.c_low


class LengthSpreadEstimator:
    """Running per-bin second moments of e_i = S_i - L_i*mu and the fitted v(L) (module docstring)."""

    def __init__(self, settings: SpreadSettings):
        self.settings = settings
        self.z = tail_quantile(settings.target_rate, settings.kappa)
        # per bin k, [n_k, l_k (sum of log L), sum of (log L)^2, q_k (sum of e^2)] as Python floats (K+1 is small)
        self.stats = [[0.0, 0.0, 0.0, 0.0] for _ in range(len(settings.edges) + 1)]
        self.log_scale = [0.0] * (len(settings.edges) + 1)  # s_k of the rate tracker
        self.updates = 0  # updates that changed the statistics
        self._fit: tuple[float, float, list[float], float] | None = None  # cached until the next update

    def update(self, lengths: torch.Tensor, centred: torch.Tensor, valid: torch.Tensor) -> bool:
        """Add one micro-batch (summed over ranks when a process group is up); True when it had spread.

        Args:
            lengths: (bs,) L_i.  centred: (bs,) e_i (detached).  valid: (bs,) bool, L_i > 0.

        The on-policy test: sqrt(sum_i e_i^2 / sum_i L_i), the per-token scale under the CLT, below ``tol``.
        """
        with torch.no_grad():
            w = valid.to(torch.float64)  # (bs,)
            if self.settings.rate_gain > 0:  # the tracker's counts: outside the band before this update
                low, high = self.half_widths(lengths)  # (bs,) each
                outside = ((centred < -low) | (centred > high)).to(torch.float64)  # (bs,)
            else:
                outside = torch.zeros_like(w)  # (bs,) no tracker, no band to form
            len64 = lengths.to(torch.float64)  # (bs,)
            log_len = len64.clamp(min=1.0).log()  # (bs,)
            values = torch.stack([w, w * log_len, w * log_len.square(), w * centred.to(torch.float64).square(), w * len64,
                                  w * outside], dim=-1)  # (bs, 6)
            local = torch.zeros(len(self.settings.edges) + 1, 6, dtype=torch.float64, device=lengths.device)  # (K+1, 6)
            local.index_add_(0, bin_index(lengths, self.settings.edges), values)
            if self.settings.sync_ranks and torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(local)
            rows = local.cpu().tolist()  # K+1 rows of [n, sum log L, sum (log L)^2, sum e^2, sum L, outside the band]
        tokens, sum_sq = sum(r[4] for r in rows), sum(r[3] for r in rows)
        if tokens <= 0 or math.sqrt(sum_sq / tokens) < self.settings.tol:
            return False  # on-policy (S_i = 0) or empty: keep the previous estimate / the prior
        decay = math.exp(-sum(r[0] for r in rows) / self.settings.memory)
        self.stats = [[decay * old + new for old, new in zip(kept, row[:4])] for kept, row in zip(self.stats, rows)]
        if self.settings.rate_gain > 0:
            p = self.settings.target_rate
            for k, row in enumerate(rows):
                if row[0] > 0:
                    step = self.settings.rate_gain * (row[5] - p * row[0]) / max(p * row[0], 1.0)
                    step = min(max(step, -RATE_STEP_MAX), RATE_STEP_MAX)
                    self.log_scale[k] = min(max(self.log_scale[k] + step, -LOG_SCALE_MAX), LOG_SCALE_MAX)
        self.updates += 1
        self._fit = None
        return True

    def fit(self) -> tuple[float, float, list[float], float]:
        """(b, alpha, r_k per bin, data weight N/(N+n0)) of the module docstring; (0, 2*beta0, zeros, 0) without data."""
        if self._fit is None:
            self._fit = self._solve()
        return self._fit

    def _solve(self) -> tuple[float, float, list[float], float]:
        n0, alpha0 = self.settings.prior_seqs, 2.0 * self.settings.prior_exponent
        bins = []  # (bin, n_k, mean log L, within-bin variance of log L, log m2_k)
        for k, (n, sl, sl2, sq) in enumerate(self.stats):
            if n > 1e-9 and sq > 0:
                x = sl / n
                bins.append((k, n, x, max(sl2 / n - x * x, 0.0), math.log(sq / n)))
        residual = [0.0] * len(self.stats)
        if not bins:
            return 0.0, alpha0, residual, 0.0
        total = sum(n for _, n, _, _, _ in bins)
        x_bar = sum(n * x for _, n, x, _, _ in bins) / total
        sxx = sum(n * (x - x_bar) ** 2 for _, n, x, _, _ in bins)
        alpha = alpha0
        for _ in range(_JENSEN_ITERATIONS):
            # m2_k = a * mean(L^alpha) ~ a * exp(alpha*x_k + alpha^2*s2_k/2): the bin's spread of lengths inflates it
            y = [y_raw - 0.5 * alpha * alpha * s2 for _, _, _, s2, y_raw in bins]
            y_bar = sum(n * yk for (_, n, _, _, _), yk in zip(bins, y)) / total
            sxy = sum(n * (x - x_bar) * (yk - y_bar) for (_, n, x, _, _), yk in zip(bins, y))
            alpha = (sxy + n0 * alpha0) / (sxx + n0) if sxx + n0 > 1e-12 else alpha0  # ridge towards the prior's
            alpha = min(max(alpha, ALPHA_RANGE[0]), ALPHA_RANGE[1])
        y = [y_raw - 0.5 * alpha * alpha * s2 for _, _, _, s2, y_raw in bins]
        b = sum(n * yk for (_, n, _, _, _), yk in zip(bins, y)) / total - alpha * x_bar
        for (k, n, x, _, _), yk in zip(bins, y):
            residual[k] = n / (n + n0) * (yk - b - alpha * x)
        return b, alpha, residual, total / (total + n0)

    def half_widths(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z*sqrt(v(L)), kappa*z*sqrt(v(L))), each (bs,) in the dtype of ``lengths``: the band's two half-widths."""
        b, alpha, residual, weight = self.fit()
        log_len = lengths.clamp(min=1.0).log()  # (bs,)
        log_v = 2.0 * math.log(self.settings.c_low / self.z) + 2.0 * self.settings.prior_exponent * log_len  # (bs,) log v0(L)
        if weight > 0:
            r = torch.tensor(residual, dtype=lengths.dtype, device=lengths.device)[bin_index(lengths, self.settings.edges)]  # (bs,)
            log_v = weight * (b + alpha * log_len + r) + (1.0 - weight) * log_v  # (bs,)
        if any(self.log_scale):
            log_v = log_v + 2.0 * torch.tensor(self.log_scale, dtype=lengths.dtype, device=lengths.device)[
                bin_index(lengths, self.settings.edges)]  # (bs,) the tracker's per-bin scale exp(s_k), squared
        low = self.z * (0.5 * log_v).exp()  # (bs,)
        return low, self.settings.kappa * low  # (bs,), (bs,)


_ESTIMATORS: dict[SpreadSettings, LengthSpreadEstimator] = {}


def estimator_for(settings: SpreadSettings) -> LengthSpreadEstimator:
    """This process's estimator for these settings (created with empty statistics on first use)."""
    if settings not in _ESTIMATORS:
        _ESTIMATORS[settings] = LengthSpreadEstimator(settings)
    return _ESTIMATORS[settings]


def reset_estimators() -> None:
    """Forget every estimator of this process (what a fresh worker process after a resume starts with)."""
    _ESTIMATORS.clear()

