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
    length_bins: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    length_bin_metrics: bool = True

    def __post_init__(self) -> None:
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        for name in ("fspo_c_low", "fspo_c_high", "sspo_tau_pos", "sspo_tau_neg"):
            _check_positive_float(name, getattr(self, name))
        _check_choice("fspo_drift", self.fspo_drift, FSPO_DRIFTS)
        _check_choice("sspo_gate", self.sspo_gate, SSPO_GATES)
        _check_bins(self.length_bins)
        if not isinstance(self.length_bin_metrics, bool):
            raise _bad("length_bin_metrics", self.length_bin_metrics, "it must be true or false")


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{_KEY}.{name}={value!r} is invalid: {allowed}.")


def _check_positive_float(name: str, value: Any) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise _bad(name, value, "it must be a finite number > 0, e.g. " + f"{_KEY}.{name}=0.01")


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
