"""Hyperparameters of the FSPO and SSPO policy losses, as a verl ``PolicyLossConfig`` subclass.

verl builds the actor config with Hydra ``instantiate``, so an unknown key under ``policy_loss`` is
rejected (struct mode) or fails in ``__init__``. A dataclass subclass selected with ``_target_`` is the
supported way to carry new fields into the workers::

    actor_rollout_ref.actor.policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=fspo
    +actor_rollout_ref.actor.policy_loss.fspo_c_high=0.02      # '+' only on the command line

``__post_init__`` validates every field. verl's ``validate_config`` instantiates the actor config in the
driver (``verl/trainer/main_ppo.py::main``), so a bad value fails there, before Ray starts a worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from verl.workers.config import PolicyLossConfig

FSPO_DRIFTS = ("none", "kl")
SSPO_GATES = ("sigmoid", "arctan", "identity")

_KEY = "actor_rollout_ref.actor.policy_loss"


@dataclass
class FSPOPolicyLossConfig(PolicyLossConfig):
    """Policy-loss config carrying the FSPO (arXiv 2509.09177) and SSPO (arXiv 2602.19327) constants.

    Fields (all under ``actor_rollout_ref.actor.policy_loss``):

    fspo_c_low (float, 0.0096):
        Lower half-width coefficient of FSPO's band on the summed log-ratio S_i:
        ``lo_i = L_i*mu - c_low*sqrt(L_i)``. Our choice, not the paper's (its constants are not public):
        GSPO's published band clips the mean log-ratio at 3e-4 below, i.e. S_i at 3e-4*L; at the reference
        length L=1024 that equals c*sqrt(1024) with c = 3e-4*32 = 0.0096. FSPO and GSPO therefore clip
        alike at L=1024, and FSPO stays length-fair at every other length.
    fspo_c_high (float, 0.0128):
        Upper coefficient, ``hi_i = L_i*mu + c_high*sqrt(L_i)``; 4e-4*32, by the same argument.
    fspo_drift ("none" | "kl"):
        The band's centre per token, mu. "none": mu = 0. "kl": mu = detached masked mean of
        (log_prob - old_log_prob) over the micro-batch (approximately -KL(old||new)), the
        "KL-corrected" centre of the paper's first version. Note that "kl" makes the loss depend on
        how the batch is split into micro-batches.
    sspo_gate ("sigmoid" | "arctan" | "identity"):
        SSPO's token gate g(r). "sigmoid": SAPO's ``sigmoid(tau*(r-1))*4/tau``. "arctan": our
        design ``exp(arctan(tau*log r)/tau)`` (g(1)=1, g'(1)=1, |log g| < pi/(2 tau)). "identity":
        g(r)=r, which reduces SSPO to GSPO.
    sspo_tau_pos (float, 1.0), sspo_tau_neg (float, 1.05):
        Gate temperatures for sequences with A_i > 0 and A_i <= 0; SAPO's published values.
    length_bins (list[int], [256, 512, 1024, 2048, 4096]):
        Upper edges of the response-length bins of the clip-rate diagnostics. A bin ``<lo>_<hi>`` holds
        lo < L <= hi; a last open-ended bin ``<last>_inf`` holds longer responses.
    fspo_target_clip_rate (float, 0.1):
        ``loss_mode=fspo_adaptive`` only: the share of sequences its band leaves outside, the same in every
        length bin (``fspo_verl.losses.length_spread``). Our choice: 0.1, the rate the CPU demo's fspo band
        was calibrated to (``data_extras/countdown_cpu.yaml``), about as often as PPO-style clipping binds at its
        usual settings. It holds on updates with spread; the first update of a step (on-policy, S_i = 0)
        clips nothing, so a step's ``actor/pg_clipfrac`` averages below it.
    fspo_adaptive_memory (float, 2048):
        Sequences the running per-bin statistics remember (an exponential window; each update decays them by
        exp(-sequences in the update / memory)). Our choice: a few steps of the CPU demo (256 a step), one step
        of a typical GPU batch, so the band follows the policy as training moves it.
    fspo_adaptive_prior_seqs (float, 64):
        n0, the pooling strength in sequences: a bin's own spread counts with weight n_k/(n_k + n0) against the
        power-law fit, alpha is pulled towards FSPO's 1 with that many sequences' weight, and the prior (FSPO's
        own band) with weight n0/(N + n0). Our choice: with 64 sequences the log second moment of a Gaussian
        bin has a standard error of sqrt(2/64) = 0.18, a half-width known to about 9%. 0 turns pooling off.
    fspo_adaptive_prior_exponent (float, 0.5):
        beta0, the length exponent of the prior band c_low*L^beta0 (used until the first update with spread) and
        the value the fitted exponent of the half-width is pulled towards. 0.5 is FSPO's sqrt(L); ``fspo-verl
        fairness calibrate --run PILOT.jsonl --fit-exponent`` fits it from a pilot run's per-bin clip counts.
    fspo_adaptive_rate_gain (float, 0.1):
        eta, the step of the per-bin rate tracker (``fspo_verl.losses.length_spread``): after each update with
        spread, bin k's half-width is scaled by exp(eta * (clipped_k - p*n_k) / max(p*n_k, 1)), so that every bin
        clips at the target p whatever the shape of S | L (the second moment alone sets p exactly only for a
        Gaussian). 0 turns it off. Our choice: 0.1 corrects a 4x error in a bin's rate within about ten updates
        with ~10 of its sequences each, while one update's binomial noise moves the band by a few percent.
    fspo_adaptive_onpolicy_tol (float, 1e-4):
        An update whose root-mean-square token log-ratio is below this is treated as on-policy (S_i = 0) and
        leaves the statistics unchanged. Our choice: above float32 recomputation noise (~1e-7 on the CPU demo),
        far below the off-policy spread (~1e-2 there). Raise it where log-probs are recomputed in bf16.
    fspo_adaptive_sync_ranks (bool, true):
        All-reduce the per-bin statistics over the default process group on every update, so that every
        data-parallel rank holds the same band. verl calls the loss the same number of times on every rank
        (equal micro-batch counts, also with dynamic batch sizes); set false where that does not hold (e.g.
        pipeline parallelism, where only the last stage computes the loss): each rank then uses its own data.
    length_bin_metrics (bool, True):
        With one of verl's built-in losses (vanilla, gspo, geo_mean, sapo, cispo), also log
        ``actor/<loss_mode>/seqs_len_*`` and ``clipped_len_*`` (``fspo_verl.diagnostics.loss_hook``); verl's
        loss itself still runs unchanged. fspo and sspo always log them.
    """

    fspo_c_low: float = 0.0096
    fspo_c_high: float = 0.0128
    fspo_drift: str = "none"
    sspo_gate: str = "sigmoid"
    sspo_tau_pos: float = 1.0
    sspo_tau_neg: float = 1.05
    fspo_target_clip_rate: float = 0.1
    fspo_adaptive_memory: float = 2048.0
    fspo_adaptive_prior_seqs: float = 64.0
    fspo_adaptive_prior_exponent: float = 0.5
    fspo_adaptive_rate_gain: float = 0.1
    fspo_adaptive_onpolicy_tol: float = 1e-4
    fspo_adaptive_sync_ranks: bool = True
    length_bins: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    length_bin_metrics: bool = True

    def __post_init__(self) -> None:
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        for name in ("fspo_c_low", "fspo_c_high", "sspo_tau_pos", "sspo_tau_neg", "fspo_adaptive_memory"):
            _check_positive_float(name, getattr(self, name))
        for name in ("fspo_adaptive_prior_seqs", "fspo_adaptive_onpolicy_tol", "fspo_adaptive_prior_exponent",
                     "fspo_adaptive_rate_gain"):
            _check_non_negative_float(name, getattr(self, name))
        rate = self.fspo_target_clip_rate
        if not (_is_number(rate) and 0.0 < rate < 1.0):
            raise _bad("fspo_target_clip_rate", rate, f"it must be a share in (0, 1), e.g. {_KEY}.fspo_target_clip_rate=0.1")
        _check_choice("fspo_drift", self.fspo_drift, FSPO_DRIFTS)
        _check_choice("sspo_gate", self.sspo_gate, SSPO_GATES)
        _check_bins(self.length_bins)
        for name in ("length_bin_metrics", "fspo_adaptive_sync_ranks"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "it must be true or false")


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{_KEY}.{name}={value!r} is invalid: {allowed}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive_float(name: str, value: Any) -> None:
    if not (_is_number(value) and value > 0):
        raise _bad(name, value, "it must be a finite number > 0, e.g. " + f"{_KEY}.{name}=0.01")


def _check_non_negative_float(name: str, value: Any) -> None:
    if not (_is_number(value) and value >= 0):
        raise _bad(name, value, "it must be a finite number >= 0, e.g. " + f"{_KEY}.{name}=64")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(name, value, "allowed values are " + ", ".join(repr(a) for a in allowed))


def _check_bins(bins: Any) -> None:
    hint = "it must be a non-empty list of strictly increasing positive integers, e.g. [256,512,1024,2048,4096]"
    try:
        edges = list(bins)
    except TypeError:
        raise _bad("length_bins", bins, hint) from None
    if not edges or any(isinstance(e, bool) or not isinstance(e, int) or e <= 0 for e in edges):
        raise _bad("length_bins", bins, hint)
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise _bad("length_bins", bins, hint)
