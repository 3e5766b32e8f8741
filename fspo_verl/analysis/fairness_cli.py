"""``fspo-verl fairness simulate | calibrate``: the command line of the simulation and the calibration.

See :mod:`fspo_verl.analysis.simulation` and :mod:`fspo_verl.analysis.calibration` for the maths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fspo_verl.analysis.calibration import (
    DEFAULT_HIGH_TO_LOW,
    fit_length_exponent,
    pilot_bins,
    predicted_fspo_clip_rate,
    run_statistics,
    sigma_from_ppo_kl,
    suggest_fspo_constants,
    tail_quantile,
)
from fspo_verl.analysis.claims import offpolicy_share
from fspo_verl.analysis.run_log import config_beside
from fspo_verl.analysis.simulation import (
    DEFAULT_METHODS,
    LENGTH_DISTS,
    TOKEN_DISTS,
    MethodConstants,
    SimulationSpec,
    draw_lengths,
    format_table,
    plot,
    simulate,
)
from fspo_verl.diagnostics.clip_rates import CLIP_INDICATORS
from fspo_verl.losses.config import FSPO_DRIFTS, SSPO_GATES, FSPOPolicyLossConfig

_BUILTIN_FLAGS = ("ppo_clip_low", "ppo_clip_high", "gspo_clip_low", "gspo_clip_high", "geo_mean_clip", "sapo_tau_pos", "sapo_tau_neg",
                  "cispo_clip_low", "cispo_clip_high")
_POLICY_LOSS_FLAGS = ("fspo_c_low", "fspo_c_high", "fspo_drift", "sspo_gate", "sspo_tau_pos", "sspo_tau_neg")


def _edges(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bins={text!r}: give comma-separated integers, e.g. 256,512,1024") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fspo-verl fairness", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)

    sim = sub.add_parser("simulate", help="clip rate per length bin for each method, as a table and a PNG")
    spec, k = SimulationSpec(), MethodConstants()
    sim.add_argument("--sigma", type=float, default=spec.sigma, help="per-token log-ratio std")
    sim.add_argument("--mu", type=float, default=spec.mu, help="per-token log-ratio mean (on-policy sampling implies -sigma^2/2)")
    sim.add_argument("--token-dist", choices=TOKEN_DISTS, default=spec.token_dist)
    sim.add_argument("--t-df", type=float, default=spec.t_df, help="Student-t degrees of freedom (--token-dist t)")
    sim.add_argument("--lengths", choices=LENGTH_DISTS, default=spec.length_dist, help="response-length distribution")
    sim.add_argument("--min-len", type=int, default=spec.min_len)
    sim.add_argument("--max-len", type=int, default=spec.max_len)
    sim.add_argument("--lognormal-median", type=float, default=spec.lognormal_median)
    sim.add_argument("--lognormal-sigma", type=float, default=spec.lognormal_sigma)
    sim.add_argument("--n", type=int, default=spec.n, help="sequences to draw")
    sim.add_argument("--seed", type=int, default=spec.seed)
    sim.add_argument("--bins", type=_edges, default=spec.edges, help="upper bin edges, e.g. 256,512,1024,2048,4096")
    sim.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma list from {','.join(CLIP_INDICATORS)}, or 'all'")
    for name in _BUILTIN_FLAGS:
        sim.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(k, name))
    for name in _POLICY_LOSS_FLAGS:
        flag, value = "--" + name.replace("_", "-"), getattr(k.policy_loss, name)
        choices = {"fspo_drift": FSPO_DRIFTS, "sspo_gate": SSPO_GATES}.get(name)
        sim.add_argument(flag, choices=choices, type=None if choices else float, default=value)
    sim.add_argument("--out", default="fairness.png", help="PNG to write")
    sim.add_argument("--json", default=None, help="also write the counts and rates as JSON here")

    cal = sub.add_parser("calibrate", help="suggest fspo_c_low/fspo_c_high for a target clip rate")
    cal.add_argument("--target", type=float, required=True, help="target share of sequences clipped, e.g. 0.1")
    source = cal.add_mutually_exclusive_group(required=True)
    source.add_argument("--sigma", type=float, help="per-token log-ratio std")
    source.add_argument("--run", help="verl file-logger JSONL: sigma from actor/ppo_kl, lengths from the run")
    cal.add_argument("--mu", type=float, default=None, help="per-token mean log-ratio (default 0 with --sigma, -ppo_kl with --run)")
    cal.add_argument("--drift", choices=FSPO_DRIFTS, default="none", help="the fspo_drift you will train with")
    cal.add_argument("--high-to-low", type=float, default=DEFAULT_HIGH_TO_LOW, help="c_high / c_low (default: the shipped 4/3)")
    cal.add_argument("--length", type=float, action="append", help="response length(s) to average over, with --sigma (default 1024)")
    cal.add_argument("--check", action="store_true", help="also simulate the suggestion and print the simulated rate")
    cal.add_argument("--fit-exponent", action="store_true",
                     help="with --run of an algorithm=fspo pilot: fit the length exponent beta of the spread of S_i from its "
                     "per-bin clip counts and print fspo_adaptive overrides (band c*L^beta at --target)")  # fmt: skip
    cal.add_argument("--pilot-c-low", type=float, default=None, help="the pilot's fspo_c_low (default: its config_<n>.yaml)")
    cal.add_argument("--pilot-c-high", type=float, default=None, help="the pilot's fspo_c_high (default: its config_<n>.yaml)")
    cal.add_argument("--offpolicy-share", type=float, default=None,
                     help="share of the pilot's updates that are off-policy (default from its config_<n>.yaml: "
                     "1 - 1/(mini-batches per step x ppo_epochs))")  # fmt: skip
    return parser


def _simulate_main(args: argparse.Namespace) -> int:
    methods = list(CLIP_INDICATORS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    spec = SimulationSpec(
        sigma=args.sigma, mu=args.mu, token_dist=args.token_dist, t_df=args.t_df, length_dist=args.lengths,
        min_len=args.min_len, max_len=args.max_len, lognormal_median=args.lognormal_median,
        lognormal_sigma=args.lognormal_sigma, n=args.n, seed=args.seed, edges=list(args.bins),
    )  # fmt: skip
    constants = MethodConstants(
        **{name: getattr(args, name) for name in _BUILTIN_FLAGS},
        policy_loss=FSPOPolicyLossConfig(**{name: getattr(args, name) for name in _POLICY_LOSS_FLAGS}),
    )
    result = simulate(spec, constants, methods)
    print(format_table(result))
    print(f"wrote {plot(result, args.out)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=1))
        print(f"wrote {args.json}")
    return 0


POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
# what the pilot's off-policy share is computed from (``analysis.claims.updates_per_step``)
UPDATE_KEYS = ("data.train_batch_size", "actor_rollout_ref.rollout.n", "actor_rollout_ref.actor.ppo_mini_batch_size")


def calibrated_overrides(c_low: float, c_high: float, drift: str) -> list[str]:
    """Hydra overrides that select FSPO with these constants, with our presets and with plain ``main_ppo``.

    The constants use Hydra's ``++`` (add the key, or override it if present): ``algorithm=fspo`` already
    defines them, so ``+key`` fails there ("Could not append to config. An item is already at ..."), while
    verl's own ``policy_loss`` section lacks them, so a plain ``key=`` fails under ``main_ppo``.
    """
    return [
        f"{POLICY_LOSS}.loss_mode=fspo",
        f"{POLICY_LOSS}._target_=fspo_verl.config.FSPOPolicyLossConfig",
        f"++{POLICY_LOSS}.fspo_c_low={c_low:.4g}",
        f"++{POLICY_LOSS}.fspo_c_high={c_high:.4g}",
        f"++{POLICY_LOSS}.fspo_drift={drift}",
    ]


def adaptive_overrides(target: float, c_low: float, c_high: float, beta: float) -> list[str]:
    """Hydra overrides selecting ``fspo_adaptive`` started from the fitted band c*L^beta (``++``: see above)."""
    return [
        f"{POLICY_LOSS}.loss_mode=fspo_adaptive",
        f"{POLICY_LOSS}._target_=fspo_verl.config.FSPOPolicyLossConfig",
        f"++{POLICY_LOSS}.fspo_target_clip_rate={target:g}",
        f"++{POLICY_LOSS}.fspo_c_low={c_low:.4g}",
        f"++{POLICY_LOSS}.fspo_c_high={c_high:.4g}",
        f"++{POLICY_LOSS}.fspo_adaptive_prior_exponent={beta:.3f}",
    ]


def _pilot_settings(run: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """(c_low, c_high, off-policy share) of the pilot: flags first, else its ``config_<n>.yaml`` (fspo-verl train)."""
    from omegaconf import OmegaConf

    config_path = config_beside(run)
    cfg = OmegaConf.load(config_path) if config_path is not None and config_path.exists() else None
    config_name = config_path.name if config_path is not None else "config_<n>.yaml"

    def from_config(key: str):
        value = OmegaConf.select(cfg, key) if cfg is not None else None
        if value is None:
            raise ValueError(f"{run}: no {config_name} beside it with {key}; pass it with a --pilot-* or --offpolicy-share flag")
        return value

    c_low = args.pilot_c_low if args.pilot_c_low is not None else float(from_config(f"{POLICY_LOSS}.fspo_c_low"))
    c_high = args.pilot_c_high if args.pilot_c_high is not None else float(from_config(f"{POLICY_LOSS}.fspo_c_high"))
    share = args.offpolicy_share
    if share is None:
        for key in UPDATE_KEYS:
            from_config(key)
        # the batch arithmetic of the comparison's tables (down-sampling's kept samples included)
        share = offpolicy_share(OmegaConf.to_container(cfg, resolve=False)) or 0.0
        if share <= 0.0:
            raise ValueError(f"{config_path}: the pilot made one update a step, all on-policy (S_i = 0): nothing was clipped to fit; "
                             "run the pilot with ppo_mini_batch_size below data.train_batch_size")  # fmt: skip
    if not 0.0 < share <= 1.0:
        raise ValueError(f"--offpolicy-share={share!r} is invalid: the pilot has no off-policy update to clip; give a share in (0, 1]")
    return c_low, c_high, share


def _fit_exponent_main(args: argparse.Namespace) -> int:
    if not args.run:
        raise ValueError("fspo-verl fairness calibrate --fit-exponent needs --run PILOT.jsonl (a run of algorithm=fspo)")
    c_low, c_high, share = _pilot_settings(args.run, args)
    _, names, lengths, seqs, rates = pilot_bins(args.run)
    kappa = c_high / c_low
    fit = fit_length_exponent(names, lengths, seqs, rates, c_low, kappa, share)
    print(f"from {args.run}: pilot band fspo_c_low={c_low:g} fspo_c_high={c_high:g}, off-policy share {share:.3g}")
    for name, length, n, rate in zip(names, lengths, seqs, rates):
        shown = "-" if rate is None else f"{rate:.4f}"
        print(f"  {name:<14} L~{length:7.1f}  sequences {n:9.0f}  pooled clip rate {shown}{'' if name in fit.used else '  (left out)'}")
    print(f"length exponent of sd(S|L): beta = {fit.beta:.3f} +- {fit.beta_se:.3f} (FSPO assumes 0.5); sd(S|L) ~ {fit.scale:.4g} * L^beta")
    c = tail_quantile(args.target, kappa) * fit.scale
    print(f"band c*L^beta clipping {args.target:g} at every length: c_low={c:.4g} c_high={kappa * c:.4g}")
    print("overrides, for `fspo-verl train algorithm=fspo_adaptive ...` and `python -m verl.trainer.main_ppo ...` alike:")
    print(" \\\n".join(f"  {line}" for line in adaptive_overrides(args.target, c, kappa * c, fit.beta)))
    return 0


def _calibrate_main(args: argparse.Namespace) -> int:
    if args.fit_exponent:
        return _fit_exponent_main(args)
    weights = None
    if args.run:
        ppo_kl, lengths, weights = run_statistics(args.run)
        sigma = sigma_from_ppo_kl(ppo_kl)
        mu = -ppo_kl if args.mu is None else args.mu
        print(f"from {args.run}: median actor/ppo_kl={ppo_kl:.3g} -> sigma=sqrt(2*ppo_kl)={sigma:.4g}, mu={mu:.3g}")
    else:
        sigma, mu, lengths = args.sigma, (0.0 if args.mu is None else args.mu), args.length or [1024.0]
    s = suggest_fspo_constants(args.target, sigma, mu, args.drift, lengths, args.high_to_low, weights)
    print(f"target clip rate {args.target:g}: fspo_c_low={s.c_low:.4g} fspo_c_high={s.c_high:.4g} (predicted {s.predicted_rate:.4f})")
    print("overrides, for `fspo-verl train algorithm=fspo ...` and `python -m verl.trainer.main_ppo ...` alike:")
    print(" \\\n".join(f"  {line}" for line in calibrated_overrides(s.c_low, s.c_high, args.drift)))
    if args.check:
        spec = SimulationSpec(sigma=sigma, mu=mu)
        constants = MethodConstants.with_policy_loss(fspo_c_low=s.c_low, fspo_c_high=s.c_high, fspo_drift=args.drift)
        simulated = simulate(spec, constants, ["fspo"]).overall_rate("fspo")
        drawn = draw_lengths(spec, torch.Generator().manual_seed(spec.seed)).tolist()  # the simulation's lengths
        same = predicted_fspo_clip_rate(s.c_low, s.c_high, sigma, mu, args.drift, drawn)
        print(
            f"check: simulated {simulated:.4f} on {spec.length_dist}[{spec.min_len},{spec.max_len}] lengths "
            f"(n={spec.n}, normal tokens); CLT prediction on those same lengths {same:.4f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _simulate_main(args) if args.mode == "simulate" else _calibrate_main(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
