"""The FSPO paper's comparison (arXiv 2509.09177) in real training: clip rate by response-length bin per method.

Input: for each method (e.g. fspo, gspo, grpo, sspo), the verl file-logger JSONLs of its runs (one per seed,
same task, steps and seeds for every method). Each run must log the per-bin counts of one loss,
``<prefix>/seqs_len_<lo>_<hi>`` and ``<prefix>/clipped_len_<lo>_<hi>`` (``fspo_verl.losses.length_bins``).

The logged per-bin values are verl's means over a step's micro-batches and ranks of per-micro-batch COUNTS, so
within step s their ratios are exact: bin b holds the share seqs_b(s) / sum_b' seqs_b'(s) of the step's
sequences, and clipped_b(s) / seqs_b(s) of those are clipped. The step's number of sequences N(s) comes from
verl's own data metrics (exact for a step's batch: every token is a prompt or a response token):

    N(s)    = perf/total_num_tokens / (prompt_length/mean + response_length/mean)
    n_b     = sum_{r,s} N(s) * seqs_b(s)    / sum_b' seqs_b'(s)       sequences in bin b, over runs r, steps s
    c_b     = sum_{r,s} N(s) * clipped_b(s) / sum_b' seqs_b'(s)       of those, clipped
    rate_b  = c_b / n_b,  se_b = sqrt(rate_b (1 - rate_b) / n_b)     (binomial standard error)
    spread  = max_b rate_b - min_b rate_b over the dense bins, n_b >= min_seqs

Steps s >= ``first_step`` count. Sparse bins (n_b < ``min_seqs``, default 400: our choice, a binomial standard
error of at most 0.5/sqrt(400) = 0.025, half the 0.05 spread FSPO is expected to stay under) are reported but
left out of the spread; with fewer than two dense bins the spread is undefined (None). The bins must be the
same for every method (pass one ``length_bins`` to all runs). With ``ppo_epochs`` > 1 the counts cover every
epoch's pass; N(s) counts each sequence once, so the rates stay shares of sequences.

Outputs of :func:`write_outputs`: ``clip_rate_by_length.png`` (rate per bin, one line per method; hollow markers
for sparse bins: the real-run counterpart of ``benchmarks/figures/fairness.png``), ``reward.png`` (mean over
seeds of ``critic/score/mean`` per step, seeds as thin lines), ``length_reweighting_error.png`` (each step's
length reweighting error, ``fspo_verl.diagnostics.fairness_number``, mean over seeds per method),
``comparison.json`` and ``comparison.md``.

    python -m fspo_verl.analysis.comparison --run fspo=a.jsonl,b.jsonl --run gspo=c.jsonl,d.jsonl --out DIR
    python -m fspo_verl.analysis.comparison --sweep SWEEP_DIR --out DIR     # a fspo-verl train -m sweep

``--sweep`` reads the ``jobs.json`` that ``fspo-verl train -m`` writes in its sweep directory and groups the
jobs by the value of their ``algorithm=`` override (``--by`` names another key); every job must have
completed (a failed or missing job is an error that names it, not a silently smaller comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fspo_verl.analysis.claims import offpolicy_share
from fspo_verl.analysis.figures import pyplot, save_figure
from fspo_verl.analysis.run_log import Run, config_beside, keys, read_run, series
from fspo_verl.diagnostics.fairness_number import step_fairness
from fspo_verl.losses.length_bins import BIN_KEY

REWARD_KEY = "critic/score/mean"
#: bins with fewer sequences than this (pooled over runs and steps) stay out of the spread (our choice, see above)
MIN_SEQS = 400
#: verl's data metrics that give a step's number of sequences
TOKENS_KEY, PROMPT_KEY, RESPONSE_KEY = "perf/total_num_tokens", "prompt_length/mean", "response_length/mean"
#: FSPO's expected spread from the CLT argument: at most this, and at most EXPECTED_RATIO x GSPO's
EXPECTED_FSPO_SPREAD = 0.05
EXPECTED_RATIO = 1.0 / 3.0


@dataclass
class BinRate:
    name: str  # len_<lo>_<hi>
    seqs: float  # n_b: sequences in the bin, over runs and steps
    clipped: float  # c_b
    share: float  # n_b / sum of n over bins
    rate: float | None  # c_b / n_b; None for an empty bin
    se: float | None  # binomial standard error of the rate
    dense: bool  # n_b >= min_seqs: counted in the spread


@dataclass
class MethodSummary:
    method: str
    prefix: str  # the loss's metric prefix, e.g. actor/gspo
    runs: list[str]
    steps: int  # training steps pooled per run (the smallest over runs)
    bins: list[BinRate]
    spread: float | None  # max - min rate over dense bins; None with fewer than two
    overall_rate: float | None
    reward_first5: float | None  # mean over seeds of the mean reward of the first / last 5 steps
    reward_last5: float | None
    reward_curve: dict[int, float] = field(default_factory=dict)  # step -> mean over seeds
    lre_curve: dict[int, float] = field(default_factory=dict)  # step -> mean over seeds of the step's LRE
    lre_mean: float | None = None  # mean over seeds and steps of the per-step length reweighting error
    reward_gain: float | None = None  # mean over seeds of (last 5 - first 5 steps' mean reward)
    reward_gain_sd: float | None = None  # its sample standard deviation over seeds (None with one seed)
    offpolicy_share: float | None = None  # share of updates that are off-policy (config_<n>.yaml beside the run)
    offpolicy_rate: float | None = None  # overall_rate / offpolicy_share: the rate on updates a band can clip
    target_rate: float | None = None  # policy_loss.fspo_target_clip_rate, when the loss has one


def _bin_prefix(run: Run, path: str) -> tuple[str, list[tuple[int, str]]]:
    """The one loss prefix with per-bin counts in ``run`` and its bins, ordered by lower edge."""
    found: dict[str, dict[tuple[int, str], set[str]]] = {}
    for key in keys(run):
        match = BIN_KEY.match(key)
        if match:
            name = f"len_{match['lo']}_{match['hi']}"
            found.setdefault(match["prefix"], {}).setdefault((int(match["lo"]), name), set()).add(match["kind"])
    complete = {p: sorted(b for b, kinds in bins.items() if kinds == {"seqs", "clipped"}) for p, bins in found.items()}
    complete = {p: b for p, b in complete.items() if b}
    if len(complete) != 1:
        raise ValueError(
            f"{path}: expected the per-bin counts of exactly one loss (<prefix>/seqs_len_*, clipped_len_*), "
            f"found {sorted(complete) or 'none'}; run verl's built-in losses with "
            "actor_rollout_ref.actor.policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig (the presets do)"
        )
    return next(iter(complete.items()))


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def sequences_in_step(metrics: dict[str, float], path: str, step: int) -> float:
    """N(s): the step's number of sequences, from verl's token count and mean prompt/response lengths."""
    try:
        return metrics[TOKENS_KEY] / (metrics[PROMPT_KEY] + metrics[RESPONSE_KEY])
    except KeyError as err:
        raise ValueError(f"{path}: step {step} lacks {err.args[0]}, which verl logs every training step; "
                         "is this the JSONL of a verl training run?") from None  # fmt: skip


def summarize_method(method: str, paths: list[str | Path], min_seqs: float = MIN_SEQS, first_step: int = 1) -> MethodSummary:
    """Pool one method's runs into per-bin clip rates, its spread and its reward curve."""
    if not paths:
        raise ValueError(f"method {method!r} has no run")
    prefix, bins = None, None
    seqs: dict[str, float] = {}
    clipped: dict[str, float] = {}
    curves: list[dict[int, float]] = []
    lre_curves: list[dict[int, float]] = []
    steps_per_run: list[int] = []
    for path in paths:
        run = read_run(path)
        run_prefix, run_bins = _bin_prefix(run, str(path))
        if prefix is None:
            prefix, bins = run_prefix, run_bins
        elif (run_prefix, run_bins) != (prefix, bins):
            raise ValueError(f"{path}: logs {run_prefix} with bins {[n for _, n in run_bins]}, but {paths[0]} "
                             f"logs {prefix} with {[n for _, n in bins]}; all runs of a method must match")
        steps = sorted(s for s in run if s >= first_step and f"{prefix}/seqs_{bins[0][1]}" in run[s])
        steps_per_run.append(len(steps))
        lre = {s: step_fairness(run[s]).get(f"{prefix}/length_reweighting_error") for s in steps}
        lre_curves.append({s: v for s, v in lre.items() if v is not None})
        for step in steps:
            logged = run[step]
            in_step = sum(logged[f"{prefix}/seqs_{name}"] for _, name in bins)
            if in_step <= 0:
                continue
            per_count = sequences_in_step(logged, str(path), step) / in_step
            for _, name in bins:
                seqs[name] = seqs.get(name, 0.0) + per_count * logged[f"{prefix}/seqs_{name}"]
                clipped[name] = clipped.get(name, 0.0) + per_count * logged[f"{prefix}/clipped_{name}"]
        curves.append(dict(zip(*series(run, REWARD_KEY))))
    total = sum(seqs.values())
    rates = []
    for _, name in bins:
        n, c = seqs.get(name, 0.0), clipped.get(name, 0.0)
        rate = c / n if n > 0 else None
        se = math.sqrt(max(rate * (1.0 - rate), 0.0) / n) if rate is not None else None
        rates.append(BinRate(name, n, c, n / total if total > 0 else 0.0, rate, se, rate is not None and n >= min_seqs))
    dense = [b.rate for b in rates if b.dense]
    curve_steps = sorted(set().union(*curves))
    curve = {s: _mean([c[s] for c in curves if s in c]) for s in curve_steps}
    firsts = [_mean([c[s] for s in sorted(c)[:5]]) for c in curves if c]
    lasts = [_mean([c[s] for s in sorted(c)[-5:]]) for c in curves if c]
    lre_steps = sorted(set().union(*lre_curves))
    gains = [last - first for first, last in zip(firsts, lasts) if first is not None and last is not None]
    share, target = _update_settings(paths[0])
    overall = sum(clipped.values()) / total if total > 0 else None
    return MethodSummary(
        method=method,
        prefix=prefix,
        runs=[str(p) for p in paths],
        steps=min(steps_per_run),
        bins=rates,
        spread=max(dense) - min(dense) if len(dense) >= 2 else None,
        overall_rate=overall,
        reward_first5=_mean([v for v in firsts if v is not None]),
        reward_last5=_mean([v for v in lasts if v is not None]),
        reward_curve={s: v for s, v in curve.items() if v is not None},
        lre_curve={s: _mean([c[s] for c in lre_curves if s in c]) for s in lre_steps},
        lre_mean=_mean([v for c in lre_curves for v in c.values()]),
        reward_gain=_mean(gains),
        reward_gain_sd=statistics.stdev(gains) if len(gains) > 1 else None,
        offpolicy_share=share,
        offpolicy_rate=overall / share if overall is not None and share else None,
        target_rate=target,
    )


def _update_settings(path: str | Path) -> tuple[float | None, float | None]:
    """(off-policy share of updates, fspo_target_clip_rate) from the ``config_<n>.yaml`` beside a run's
    ``metrics_<n>.jsonl`` (``fspo-verl train``); (None, None) without one. Of the u updates a step
    (``fspo_verl.analysis.claims.offpolicy_share``) the first is on-policy (S_i = 0, nothing to clip): 1 - 1/u."""
    config_path = config_beside(path)
    if config_path is None or not config_path.is_file():
        return None, None
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    try:
        share = offpolicy_share(config)
    except (TypeError, ValueError):
        return None, None
    loss = config.get("actor_rollout_ref", {}).get("actor", {}).get("policy_loss", {})
    target = loss.get("fspo_target_clip_rate") if "adaptive" in str(loss.get("loss_mode")) else None
    return share, (float(target) if target is not None else None)


def summarize(runs: dict[str, list[str | Path]], min_seqs: float = MIN_SEQS, first_step: int = 1) -> dict:
    """Every method's summary, plus FSPO against GSPO when both are present. JSON-ready."""
    methods = {m: summarize_method(m, paths, min_seqs, first_step) for m, paths in runs.items()}
    names = {tuple(b.name for b in s.bins) for s in methods.values()}
    if len(names) > 1:
        raise ValueError(
            "methods logged different length bins "
            + "; ".join(f"{m}: {[b.name for b in s.bins]}" for m, s in methods.items())
            + ": pass the same actor_rollout_ref.actor.policy_loss.length_bins to every run"
        )
    out = {"min_seqs": min_seqs, "first_step": first_step, "methods": {m: asdict(s) for m, s in methods.items()}}
    ada = methods.get("fspo_adaptive")
    if ada is not None:
        others = {m: methods[m].spread for m in ("gspo", "fspo") if m in methods and methods[m].spread is not None}
        checks = {f"spread <= {EXPECTED_FSPO_SPREAD}": ada.spread is not None and ada.spread <= EXPECTED_FSPO_SPREAD}
        for m, spread in others.items():
            checks[f"spread <= 1/3 x {m}'s ({spread:.3f})"] = ada.spread is not None and ada.spread <= EXPECTED_RATIO * spread
        if ada.target_rate is not None and ada.offpolicy_rate is not None:
            checks[f"off-policy clip rate within 30% of the target {ada.target_rate:g}"] = (
                abs(ada.offpolicy_rate - ada.target_rate) <= 0.3 * ada.target_rate)
        out["fspo_adaptive_targets"] = checks
    fspo, gspo = methods.get("fspo"), methods.get("gspo")
    if fspo is not None and gspo is not None:
        holds = None
        ratio = None
        if fspo.spread is not None and gspo.spread is not None:
            ratio = fspo.spread / gspo.spread if gspo.spread > 0 else None
            holds = fspo.spread <= EXPECTED_FSPO_SPREAD and fspo.spread <= EXPECTED_RATIO * gspo.spread
        out["fspo_vs_gspo"] = {
            "fspo_spread": fspo.spread,
            "gspo_spread": gspo.spread,
            "ratio": ratio,
            "expected": f"fspo spread <= {EXPECTED_FSPO_SPREAD} and <= {EXPECTED_RATIO:.3f} x gspo spread",
            "holds": holds,
        }
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(summary: dict) -> str:
    """One row per method: each bin's rate (sparse bins in parentheses), the spread and the rewards."""
    methods = summary["methods"]
    bins = [b["name"] for b in next(iter(methods.values()))["bins"]]
    header = ["method", *(b.removeprefix("len_").replace("_", "-") for b in bins), "spread (max-min)", "overall",
              "off-policy rate", "reward first 5", "reward last 5", "reward gain (mean ± sd over seeds)",
              "mean LRE per step"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        cells = [_fmt(b["rate"]) if b["dense"] or b["rate"] is None else f"({_fmt(b['rate'])})" for b in m["bins"]]
        spread = _fmt(m["spread"]) if m["spread"] is not None else "- (fewer than 2 dense bins)"
        gain = _fmt(m.get("reward_gain")) + ("" if m.get("reward_gain_sd") is None else f" ± {m['reward_gain_sd']:.3f}")
        lines.append("| " + " | ".join([name, *cells, spread, _fmt(m["overall_rate"]), _fmt(m.get("offpolicy_rate")),
                                        _fmt(m["reward_first5"]), _fmt(m["reward_last5"]), gain,
                                        _fmt(m["lre_mean"])]) + " |")  # fmt: skip
    notes = [
        "",
        (
            f"Rates pooled over seeds and steps >= {summary['first_step']}; in parentheses: bins with fewer than "
            f"{summary['min_seqs']:g} sequences, left out of the spread ('-': no sequence). LRE: the length "
            "reweighting error of each step's per-bin clip rates (fspo_verl.diagnostics.fairness_number). "
            "Off-policy rate: the overall rate over the share of updates that are off-policy (the first update of a "
            "step is on-policy and clips nothing)."
        ),
    ]
    for check, held in (summary.get("fspo_adaptive_targets") or {}).items():
        notes.append(f"fspo_adaptive {check}: {'holds' if held else 'does NOT hold'}.")
    versus = summary.get("fspo_vs_gspo")
    if versus is not None:
        notes.append(
            f"FSPO spread {_fmt(versus['fspo_spread'])} vs GSPO {_fmt(versus['gspo_spread'])} "
            f"(ratio {_fmt(versus['ratio'], 2)}); expected {versus['expected']}: "
            + {True: "holds", False: "does NOT hold", None: "undefined"}[versus["holds"]]
            + "."
        )
    return "\n".join(lines + notes) + "\n"


def plot_clip_rates(summary: dict, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for i, (name, m) in enumerate(summary["methods"].items()):
        colour = f"C{i % 10}"
        xs = list(range(len(m["bins"])))
        ys = [float("nan") if b["rate"] is None else b["rate"] for b in m["bins"]]
        spread = "" if m["spread"] is None else f" (spread {m['spread']:.3f})"
        ax.plot(xs, ys, color=colour, linewidth=1.5, label=f"{name}{spread}")
        dense = [(x, y) for x, y, b in zip(xs, ys, m["bins"]) if b["dense"]]
        sparse = [(x, y) for x, y, b in zip(xs, ys, m["bins"]) if not b["dense"] and b["rate"] is not None]
        if dense:
            ax.scatter(*zip(*dense), color=colour, s=28, zorder=3)
        if sparse:
            ax.scatter(*zip(*sparse), facecolors="none", edgecolors=colour, s=28, zorder=3)
    labels = [b["name"].removeprefix("len_").replace("_", "-") for b in next(iter(summary["methods"].values()))["bins"]]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("response length bin (tokens)")
    ax.set_ylabel("share of sequences clipped")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Clip rate by response length in real training (hollow: sparse bin, not in the spread)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, out)


def plot_rewards(runs: dict[str, list[str | Path]], summary: dict, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for i, (name, paths) in enumerate(runs.items()):
        colour = f"C{i % 10}"
        for path in paths:
            ax.plot(*series(read_run(path), REWARD_KEY), color=colour, alpha=0.25, linewidth=0.8)
        curve = summary["methods"][name]["reward_curve"]
        steps = sorted(curve, key=int)
        ax.plot([int(s) for s in steps], [curve[s] for s in steps], color=colour, linewidth=2,
                label=f"{name} (mean of {len(paths)} seed{'s' if len(paths) != 1 else ''})")  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel(REWARD_KEY)
    ax.set_title("Reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, out)


def plot_lre(summary: dict, out: Path) -> Path:
    """Per method, the per-step length reweighting error, mean over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for i, (name, m) in enumerate(summary["methods"].items()):
        steps = sorted(m["lre_curve"], key=int)
        mean = "" if m["lre_mean"] is None else f" (mean {m['lre_mean']:.3f})"
        ax.plot([int(s) for s in steps], [m["lre_curve"][s] for s in steps], color=f"C{i % 10}", marker="o",
                markersize=3, label=f"{name}{mean}")  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("length reweighting error")
    ax.set_title("Per-step length reweighting error of the clip (0: every length bin clipped alike)", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, out)


def write_outputs(runs: dict[str, list[str | Path]], out_dir: str | Path, min_seqs: float = MIN_SEQS,
                  first_step: int = 1) -> dict[str, Path]:  # fmt: skip
    """Summarize and write the two figures, the JSON and the markdown table; name -> path."""
    out_dir = Path(out_dir)
    summary = summarize(runs, min_seqs, first_step)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "comparison.md").write_text(markdown_table(summary))
    return {
        "clip_rate_by_length.png": plot_clip_rates(summary, out_dir / "clip_rate_by_length.png"),
        "reward.png": plot_rewards(runs, summary, out_dir / "reward.png"),
        "length_reweighting_error.png": plot_lre(summary, out_dir / "length_reweighting_error.png"),
        "comparison.json": out_dir / "comparison.json",
        "comparison.md": out_dir / "comparison.md",
    }


def runs_from_sweep(sweep_dir: str | Path, by: str = "algorithm") -> dict[str, list[str]]:
    """method -> metrics JSONLs of a ``fspo-verl train -m`` sweep, from its ``jobs.json``, grouped by the
    value of each job's ``<by>=`` override, in job order."""
    jobs_file = Path(sweep_dir) / "jobs.json"
    if not jobs_file.is_file():
        raise FileNotFoundError(f"{jobs_file}: no such file; pass the sweep directory of a finished "
                                "`fspo-verl train -m ...` (it writes jobs.json there)")
    runs: dict[str, list[str]] = {}
    problems = []
    for job in json.loads(jobs_file.read_text()):
        values = [o.split("=", 1)[1] for o in job["overrides"] if o.lstrip("+~").split("=", 1)[0] == by and "=" in o]
        if len(values) != 1:
            problems.append(f"job {job['job']} has no single {by}= override ({' '.join(job['overrides'])})")
            continue
        if job.get("status") != "ok":
            problems.append(f"job {job['job']} ({' '.join(job['overrides'])}) is {job.get('status')}: "
                            f"{job.get('error', 'no error recorded')}")
            continue
        runs.setdefault(values[0], []).append(job["metrics"])
    if problems:
        raise ValueError(f"{jobs_file}: " + "; ".join(problems))
    return runs


def _parse_run(text: str) -> tuple[str, list[str]]:
    method, sep, paths = text.partition("=")
    if not sep or not method or not paths:
        raise argparse.ArgumentTypeError(f"--run {text!r}: expected METHOD=RUN.jsonl[,RUN.jsonl...]")
    return method, [p for p in paths.split(",") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fspo_verl.analysis.comparison", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", action="append", type=_parse_run, metavar="METHOD=RUN.jsonl[,...]",
                        help="one method's runs (one JSONL per seed); repeat for every method")  # fmt: skip
    source.add_argument("--sweep", metavar="SWEEP_DIR", help="the sweep directory of `fspo-verl train -m` (its jobs.json)")
    parser.add_argument("--by", default="algorithm", help="with --sweep: the override whose value names the method")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--min-seqs", type=float, default=MIN_SEQS, help=f"sparse-bin threshold (default {MIN_SEQS})")
    parser.add_argument("--first-step", type=int, default=1, help="pool steps >= this (default 1)")
    args = parser.parse_args(argv)
    try:
        runs = runs_from_sweep(args.sweep, args.by) if args.sweep else dict(args.run)
        written = write_outputs(runs, args.out, args.min_seqs, args.first_step)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(args.out) / "comparison.md").read_text())
    for where in written.values():
        print(f"wrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
