"""Each down-sampling / baseline paper's headline claim, measured in real training runs of verl's trainer.

Claims (the variants are ``recipes/claims_cpu.sh``'s; every variant of a claim gets the same seeds, prompts
and number of optimizer updates):

- ``pods``, PODS (arXiv 2504.13818): training on the max-variance m of n rollouts beats training on all n, and
  beats a random m of n; the paper's headline is a higher reward at equal wall-clock.
- ``gfpo``, GFPO (arXiv 2508.09726): keeping each group's shortest / most token-efficient responses cuts the
  growth of the response length (46-71% in the paper) at the same accuracy.
- ``opo``, OPO (arXiv 2505.23585): exact on-policy training with the optimal baseline gives a lower policy
  shift (``actor/ppo_kl``) and a higher entropy (``actor/entropy``) than GRPO.

Input: ``<runs>/<variant>/seed<k>/metrics_0.jsonl`` (verl's file logger) and ``config_0.yaml`` (the run's
resolved config), one run directory per seed (``fspo_verl.cli.run_dir``). Per run, with S logged training steps:

    reward(s)   = pods/reward_mean_before (the mean over all n samples: the policy's reward) when logged,
                  else critic/score/mean (verl's, over the trained samples = all n without down-sampling)
    length(s)   = pods/response_length_before when logged, else response_length/mean (same reason)
    updates     = S * ppo_epochs * (train_batch_size * kept) / (ppo_mini_batch_size * n)
                  kept = sampler_kwargs.keep with down-sampling, else n; verl's mini-batch counts prompts x n
    wall(s)     = sum of timing_s/step up to s                      (seconds of training, validation excluded)
    early, late = mean over the first / the last ceil(S/4) steps;  gain = late - early
    reward at T = ``late`` over the steps done within T training seconds (the first k steps with
                  wall(k) <= T, at least one), T = the smallest mean ``wall`` of the claim's variants: every
                  variant's reward at the fastest variant's budget (PODS's "equal wall-clock")
    val         = the validation score (val-core/<source>/<metric>/mean@1) at the first and the last step that
                  logged it: in the JSON only. The demo validates with greedy decoding, which the warm-started
                  model already solves (1.0 at step 0): training moves the sampled reward, not this one

Per variant: the mean and the sample standard deviation (ddof=1) of each number over seeds. "A beats B" is
decided against seed noise: with d = mean_A - mean_B and se = sqrt(sd_A^2/k_A + sd_B^2/k_B), ``d > 2 se``
beats, ``d < -2 se`` loses, otherwise within noise (our choice: about a 95% two-sided interval; with 3 seeds a
loose one, so "within noise" is a common and honest answer).

Outputs (:func:`write_claim`): ``<claim>.json``, ``<claim>.md`` (one table row per variant, the verdict under
it) and ``<claim>.png`` (reward against optimizer updates and against wall-clock; GFPO adds the length, OPO the
KL and the entropy), with thin lines per seed and the mean over seeds.

    python -m fspo_verl.analysis.claims --claim pods --runs OUT/runs --out OUT \\
        --variants grpo pods_max_variance pods_random pods_max_reward
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from fspo_verl.analysis.figures import pyplot, save_figure
from fspo_verl.analysis.run_log import Run, finite, keys, read_run, series

REWARD_KEYS = ("pods/reward_mean_before", "critic/score/mean")
LENGTH_KEYS = ("pods/response_length_before", "response_length/mean")
STEP_TIME_KEY = "timing_s/step"
#: phases whose mean seconds a step the tables report (verl's timing_s/*)
PHASES = ("gen", "old_log_prob", "update_actor")
#: the reference every claim compares against
BASELINE = "grpo"
#: |d| > NOISE_SE x se decides "beats"/"loses" (our choice, see the module docstring)
NOISE_SE = 2.0
CLAIMS = {
    "pods": "PODS (arXiv 2504.13818): training on the max-variance m of n beats training on all n and a random m "
    "of n; the paper's headline is a higher reward at equal wall-clock",
    "gfpo": "GFPO (arXiv 2508.09726): filtering to the shortest / most token-efficient responses cuts the growth "
    "of the response length (46-71% in the paper) at the same accuracy",
    "opo": "OPO (arXiv 2505.23585): exact on-policy training with the optimal baseline gives a lower policy shift "
    "(actor/ppo_kl) and a higher entropy than GRPO, with stable training",
}


@dataclass
class RunSummary:
    """One run's numbers (see the module docstring for each definition)."""

    path: str
    steps: int
    updates: float
    reward_early: float
    reward_late: float
    reward_gain: float
    length_early: float
    length_late: float
    length_growth: float
    val_first: float | None
    val_last: float | None
    wall_s: float
    phase_s: dict[str, float]
    ppo_kl: float | None
    entropy_late: float | None
    grad_norm_mean: float | None
    grad_norm_sd: float | None
    reward_at_budget: float | None = None


@dataclass
class Stat:
    mean: float | None
    sd: float | None
    n: int


def _first_key(run: Run, candidates: tuple[str, ...], path: Path) -> str:
    logged = keys(run)
    for key in candidates:
        if key in logged:
            return key
    raise ValueError(f"{path}: logs none of {list(candidates)}; is it a metrics_0.jsonl of a fspo-verl train run?")


def _window(values: list[float], last: bool) -> float:
    k = max(1, math.ceil(len(values) / 4))
    part = values[-k:] if last else values[:k]
    return sum(part) / len(part)


def _mean_or_none(values: list[float]) -> float | None:
    values = finite(values)
    return sum(values) / len(values) if values else None


def _config_value(config: dict, dotted: str, default=None):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def updates_per_step(config: dict) -> float:
    """Optimizer updates a step: ppo_epochs x (samples trained a step) / (samples a mini-batch holds).

    verl's ``ppo_mini_batch_size`` counts prompts and is multiplied by ``rollout.n``; with down-sampling the step
    trains on ``keep`` samples per prompt (``fspo_verl.downsampling.settings`` derives the mini-batch accordingly)."""
    n = int(_config_value(config, "actor_rollout_ref.rollout.n"))
    prompts = int(_config_value(config, "data.train_batch_size"))
    mini = int(_config_value(config, "actor_rollout_ref.actor.ppo_mini_batch_size"))
    epochs = int(_config_value(config, "actor_rollout_ref.actor.ppo_epochs", 1))
    sampler = _config_value(config, "trainer.v1.sampler", {}) or {}
    keep = _config_value(sampler, "sampler_kwargs.keep") if _config_value(sampler, "custom_sampler.path") else None
    kept = int(keep) if keep else n
    return epochs * (prompts * kept) / (mini * n)


def offpolicy_share(config: dict) -> float | None:
    """Share of a step's updates that are off-policy: 1 - 1/u for u = ``updates_per_step(config)``, since the first
    update of a step is on-policy (S_i = 0, nothing to clip); None when u <= 0. Raises TypeError/ValueError where
    the config lacks a key ``updates_per_step`` reads."""
    updates = updates_per_step(config)
    return 1.0 - 1.0 / updates if updates > 0 else None


def summarize_run(run_dir: str | Path) -> tuple[RunSummary, Run]:
    """The numbers of one run directory (``metrics_0.jsonl`` and ``config_0.yaml``)."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics_0.jsonl"
    run = read_run(metrics_path)
    config_path = run_dir / "config_0.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such file; a fspo-verl run directory holds its config there")
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)

    reward_key = _first_key(run, REWARD_KEYS, metrics_path)
    steps, reward = series(run, reward_key)
    if not steps:
        raise ValueError(f"{metrics_path}: no training step logged {reward_key}")
    _, length = series(run, _first_key(run, LENGTH_KEYS, metrics_path))
    _, step_time = series(run, STEP_TIME_KEY)
    phase_s = {p: _mean_or_none(series(run, f"timing_s/{p}")[1]) for p in PHASES}
    val_keys = sorted(k for k in keys(run) if k.startswith("val-core/") and k.endswith("/mean@1"))
    val_steps, val = series(run, val_keys[0]) if val_keys else ([], [])
    _, kl = series(run, "actor/ppo_kl")
    _, entropy = series(run, "actor/entropy")
    _, grad = series(run, "actor/grad_norm")
    grad = [g for g in grad if math.isfinite(g)]
    reward_early, reward_late = _window(reward, last=False), _window(reward, last=True)
    length_early, length_late = _window(length, last=False), _window(length, last=True)
    summary = RunSummary(
        path=str(run_dir),
        steps=len(steps),
        updates=len(steps) * updates_per_step(config),
        reward_early=reward_early,
        reward_late=reward_late,
        reward_gain=reward_late - reward_early,
        length_early=length_early,
        length_late=length_late,
        length_growth=length_late - length_early,
        val_first=val[0] if val else None,
        val_last=val[-1] if len(val_steps) > 1 else None,
        wall_s=sum(step_time),
        phase_s={p: v for p, v in phase_s.items() if v is not None},
        ppo_kl=_mean_or_none(kl),
        entropy_late=_window(entropy, last=True) if entropy else None,
        grad_norm_mean=_mean_or_none(grad),
        grad_norm_sd=statistics.stdev(grad) if len(grad) > 1 else None,
    )
    return summary, run


def stat(values: list[float | None]) -> Stat:
    """Mean and sample sd (ddof=1; None for one value) of the values that are not None."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return Stat(None, None, 0)
    return Stat(sum(values) / len(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def compare(a: Stat, b: Stat, higher_is_better: bool = True) -> str:
    """'beats', 'loses' or 'within noise': a against b, by d = mean_a - mean_b against NOISE_SE x se."""
    if a.mean is None or b.mean is None:
        return "not measured"
    d = a.mean - b.mean if higher_is_better else b.mean - a.mean
    se = math.sqrt((a.sd or 0.0) ** 2 / a.n + (b.sd or 0.0) ** 2 / b.n)
    if d > NOISE_SE * se:
        return "beats"
    if d < -NOISE_SE * se:
        return "loses"
    return "within noise"


FIELDS = ("updates", "reward_early", "reward_late", "reward_gain", "val_first", "val_last", "length_early",
          "length_late", "length_growth", "wall_s", "ppo_kl", "entropy_late", "grad_norm_mean", "grad_norm_sd")  # fmt: skip


def run_dirs(runs_root: str | Path, variant: str) -> list[Path]:
    """The seed run directories of one variant: ``<runs_root>/<variant>/*/metrics_0.jsonl``, sorted."""
    folder = Path(runs_root) / variant
    found = sorted(p.parent for p in folder.glob("*/metrics_0.jsonl"))
    if not found:
        raise FileNotFoundError(f"{folder}: no run (no */metrics_0.jsonl); run recipes/claims_cpu.sh first")
    return found


def summarize_claim(claim: str, runs_root: str | Path, variants: list[str]) -> tuple[dict, dict[str, list[Run]]]:
    """Per variant: each run's numbers, their mean +- sd over seeds; then the claim's verdict. JSON-ready."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; one of {sorted(CLAIMS)}")
    if BASELINE not in variants:
        raise ValueError(f"the claim {claim!r} compares against {BASELINE!r}; add it to the variants")
    out: dict = {"claim": claim, "statement": CLAIMS[claim], "noise_se": NOISE_SE, "variants": {}}
    curves: dict[str, list[Run]] = {}
    stats: dict[str, dict[str, Stat]] = {}
    pairs_by_variant: dict[str, list[tuple[RunSummary, Run]]] = {}
    for variant in variants:
        pairs = [summarize_run(d) for d in run_dirs(runs_root, variant)]
        runs = [s for s, _ in pairs]
        curves[variant] = [r for _, r in pairs]
        stats[variant] = {f: stat([getattr(r, f) for r in runs]) for f in FIELDS}
        pairs_by_variant[variant] = pairs
        for phase in PHASES:
            stats[variant][f"phase_{phase}_s"] = stat([r.phase_s.get(phase) for r in runs])
        out["variants"][variant] = {"seeds": len(runs), "stats": {k: asdict(v) for k, v in stats[variant].items()}}
    budget = min(s["wall_s"].mean for s in stats.values() if s["wall_s"].mean is not None)
    out["budget_s"] = budget
    for variant, pairs in pairs_by_variant.items():
        for summary, run in pairs:
            summary.reward_at_budget = reward_within(run, budget)
        stats[variant]["reward_at_budget"] = stat([s.reward_at_budget for s, _ in pairs])
        out["variants"][variant]["stats"]["reward_at_budget"] = asdict(stats[variant]["reward_at_budget"])
        out["variants"][variant]["runs"] = [asdict(s) for s, _ in pairs]
    out["verdict"] = _verdict(claim, stats, variants)
    return out, curves


def reward_within(run: Run, budget_s: float) -> float | None:
    """``late`` reward over the steps finished within ``budget_s`` training seconds (at least the first step)."""
    key = next((k for k in REWARD_KEYS if k in keys(run)), None)
    steps, times = series(run, STEP_TIME_KEY)
    if key is None or not steps:
        return None
    done, total = 0, 0.0
    for t in times:
        if done and total + t > budget_s:
            break
        total += t
        done += 1
    rewards = [run[s][key] for s in steps[:done] if key in run[s]]
    return _window(rewards, last=True) if rewards else None


def _verdict(claim: str, stats: dict[str, dict[str, Stat]], variants: list[str]) -> dict:
    base = stats[BASELINE]
    others = [v for v in variants if v != BASELINE]
    tests: dict[str, str] = {}
    if claim == "pods":
        main = next((v for v in others if v.endswith("max_variance")), others[0])
        tests[f"{main} late reward vs {BASELINE}"] = compare(stats[main]["reward_late"], base["reward_late"])
        for v in others:
            if v != main:
                tests[f"{main} late reward vs {v}"] = compare(stats[main]["reward_late"], stats[v]["reward_late"])
        tests[f"{main} reward at equal training seconds vs {BASELINE}"] = compare(
            stats[main]["reward_at_budget"], base["reward_at_budget"]
        )
        tests[f"{main} training seconds vs {BASELINE} (lower is better)"] = compare(
            stats[main]["wall_s"], base["wall_s"], higher_is_better=False
        )
        # the headline: a higher reward than grpo at equal wall-clock, and than a random m of n (equal updates)
        held = tests[f"{main} reward at equal training seconds vs {BASELINE}"] == "beats" and all(
            r == "beats" for k, r in tests.items() if "late reward vs pods_random" in k
        )
    elif claim == "gfpo":
        for v in others:
            tests[f"{v} late length vs {BASELINE} (lower is better)"] = compare(
                stats[v]["length_late"], base["length_late"], higher_is_better=False
            )
            tests[f"{v} late reward vs {BASELINE}"] = compare(stats[v]["reward_late"], base["reward_late"])
        held = all(
            r == "beats" for k, r in tests.items() if "length" in k
        ) and all(r != "loses" for k, r in tests.items() if "reward" in k)  # fmt: skip
        growth = base["length_growth"]
        if growth.mean is not None and growth.mean <= 0:
            # the claim is about cutting length growth: with none under GRPO there is nothing to cut
            return {"tests": tests, "held": None, "why_not_testable": (
                f"{BASELINE}'s response length did not grow ({growth.mean:+.1f} tokens, first to last quarter): "
                "the claim is about cutting its growth"), **_length_cut(stats, others)}
    else:
        main = "opo" if "opo" in others else others[0]
        for v in (o for o in others if o != main):
            tests[f"{main} ppo_kl vs {v} (lower is better)"] = compare(
                stats[main]["ppo_kl"], stats[v]["ppo_kl"], higher_is_better=False
            )
            tests[f"{main} late entropy vs {v}"] = compare(stats[main]["entropy_late"], stats[v]["entropy_late"])
        tests[f"{main} ppo_kl vs {BASELINE} (lower is better)"] = compare(
            stats[main]["ppo_kl"], base["ppo_kl"], higher_is_better=False
        )
        tests[f"{main} late entropy vs {BASELINE}"] = compare(stats[main]["entropy_late"], base["entropy_late"])
        tests[f"{main} late reward vs {BASELINE}"] = compare(stats[main]["reward_late"], base["reward_late"])
        held = all(r == "beats" for k, r in tests.items() if BASELINE in k and "reward" not in k) and (
            tests[f"{main} late reward vs {BASELINE}"] != "loses"
        )
    return {"tests": tests, "held": held, **(_length_cut(stats, others) if claim == "gfpo" else {})}


def _length_cut(stats: dict[str, dict[str, Stat]], others: list[str]) -> dict:
    """GFPO's headline number: 1 - growth_v / growth_grpo of the mean response length (only when GRPO's grew)."""
    growth = stats[BASELINE]["length_growth"].mean
    if not growth or growth <= 0:
        return {}
    return {"length_growth_cut_vs_grpo": {
        v: (1.0 - stats[v]["length_growth"].mean / growth) if stats[v]["length_growth"].mean is not None else None
        for v in others}}  # fmt: skip


def _fmt(s: dict, digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    return text + (f" ± {s['sd']:.{digits}f}" if s["sd"] is not None else "")


#: (column, stat field, digits) per claim's table
COLUMNS = {
    "pods": [("updates", "updates", 0), ("reward first ¼", "reward_early", 3), ("reward last ¼", "reward_late", 3),
             ("gain", "reward_gain", 3), ("reward at budget", "reward_at_budget", 3), ("train s", "wall_s", 0),
             ("gen s/step", "phase_gen_s", 2), ("update s/step", "phase_update_actor_s", 2)],
    "gfpo": [("updates", "updates", 0), ("length first ¼", "length_early", 1), ("length last ¼", "length_late", 1),
             ("length growth", "length_growth", 1), ("reward last ¼", "reward_late", 3), ("train s", "wall_s", 0)],
    "opo": [("updates", "updates", 0), ("ppo_kl", "ppo_kl", 6), ("entropy last ¼", "entropy_late", 3),
            ("grad norm", "grad_norm_mean", 3), ("grad norm sd (steps)", "grad_norm_sd", 3),
            ("reward last ¼", "reward_late", 3), ("gain", "reward_gain", 3)],
}  # fmt: skip


def markdown(summary: dict) -> str:
    """One row per variant (mean ± sd over seeds), then each test's verdict and whether the claim held."""
    cols = COLUMNS[summary["claim"]]
    lines = [f"**Claim.** {summary['statement']}.", "",
             "| variant | seeds | " + " | ".join(c for c, _, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]  # fmt: skip
    for name, v in summary["variants"].items():
        cells = [_fmt(v["stats"][f], d) for _, f, d in cols]
        lines.append(f"| {name} | {v['seeds']} | " + " | ".join(cells) + " |")
    note = f"Mean ± sd over seeds; a test 'beats' when the difference exceeds {NOISE_SE:g} standard errors."
    if any(f == "reward_at_budget" for _, f, _ in cols):
        note += (f" Reward at budget: the late reward within {summary['budget_s']:.0f} training seconds, the fastest "
                 "variant's mean.")  # fmt: skip
    lines += ["", note, ""]
    for test, result in summary["verdict"]["tests"].items():
        lines.append(f"- {test}: **{result}**")
    for v, cut in summary["verdict"].get("length_growth_cut_vs_grpo", {}).items():
        if cut is not None:
            lines.append(f"- {v} length growth cut vs {BASELINE}: {cut:.0%}")
    held = summary["verdict"]["held"]
    if held is None:
        lines += ["", f"Claim held: **not testable here**: {summary['verdict']['why_not_testable']}."]
    else:
        lines += ["", f"Claim held: **{'yes' if held else 'no'}**."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, curves: dict[str, list[Run]], out: Path) -> Path:
    """Reward against updates and wall-clock; GFPO adds length, OPO the KL and the entropy."""
    plt = pyplot()
    extra = {"gfpo": [("length", LENGTH_KEYS)], "opo": [("actor/ppo_kl", ("actor/ppo_kl",)),
             ("actor/entropy", ("actor/entropy",))]}.get(summary["claim"], [])  # fmt: skip
    panels = [("reward (all n)", REWARD_KEYS, "updates"), ("reward (all n)", REWARD_KEYS, "wall")]
    panels += [(label, ks, "updates") for label, ks in extra]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        per_step = summary["variants"][name]["runs"][0]["updates"] / summary["variants"][name]["runs"][0]["steps"]
        for ax, (label, candidates, x_axis) in zip(axes, panels, strict=True):
            ys: list[list[float]] = []
            xs: list[list[float]] = []
            for run in runs:
                key = next(k for k in candidates if k in keys(run))
                steps, values = series(run, key)
                if x_axis == "wall":
                    _, t = series(run, STEP_TIME_KEY)
                    x = [sum(t[: k + 1]) for k in range(len(t))][: len(values)]
                else:
                    x = [s * per_step for s in steps]
                ax.plot(x, values[: len(x)], color=color, alpha=0.25, lw=0.8)
                ys.append(values[: len(x)])
                xs.append(x)
            width = min(len(y) for y in ys)
            mean_y = [sum(y[k] for y in ys) / len(ys) for k in range(width)]  # (width,)
            mean_x = [sum(x[k] for x in xs) / len(xs) for k in range(width)]  # (width,)
            ax.plot(mean_x, mean_y, color=color, lw=2, label=name if ax is axes[0] else None)
            ax.set_xlabel("training seconds (thick: mean over seeds of x and y)" if x_axis == "wall" else "optimizer updates")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{summary['claim']}: {len(next(iter(curves.values())))} seeds per variant (thin: seeds)")
    return save_figure(fig, plt, out)


def write_claim(claim: str, runs_root: str | Path, out_dir: str | Path, variants: list[str]) -> dict:
    """``<claim>.json``, ``<claim>.md`` and ``<claim>.png`` in ``out_dir``; returns the summary."""
    summary, curves = summarize_claim(claim, runs_root, variants)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{claim}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / f"{claim}.md").write_text(markdown(summary))
    plot(summary, curves, out_dir / f"{claim}.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fspo_verl.analysis.claims", description=__doc__.split("\n")[0])
    parser.add_argument("--claim", required=True, choices=sorted(CLAIMS))
    parser.add_argument("--runs", required=True, help="the folder holding <variant>/seed<k>/ run directories")
    parser.add_argument("--out", required=True, help="where <claim>.{json,md,png} go")
    parser.add_argument("--variants", nargs="+", required=True, help=f"variant folders; one must be {BASELINE!r}")
    args = parser.parse_args(argv)
    try:
        summary = write_claim(args.claim, args.runs, args.out, args.variants)
    except (FileNotFoundError, ValueError) as err:
        print(f"claims: {err}", file=sys.stderr)
        return 2
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
