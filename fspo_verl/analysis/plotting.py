"""``fspo-verl plot RUN.jsonl``: PNGs of a training run from verl's file logger.

Writes to ``--out`` (default: next to the JSONL, in ``<run>_plots/``):

    reward.png                 critic/score/mean over steps (band: critic/score/min..max), and any
                               val-core/*/reward/* or val-core/*/acc/* validation curve
    response_length.png        response_length/mean (band: min..max); clip_ratio (share of responses cut at
                               the length limit) on a second axis
    clip_rate_by_length.png    one row per loss that logged per-bin counts (actor/fspo, actor/sspo, ...). Left:
                               clip rate of each length bin over steps, mean(clipped_len_X)/mean(seqs_len_X);
                               a bin with no sequence at a step leaves a gap; actor/pg_clipfrac dashed; the
                               step's length reweighting error (``fairness_number``) dotted. Right: each bin's
                               clip rate pooled over the run, with its binomial standard error
                               sqrt(r(1-r)/n) as error bar (n: the bin's sequences over the run, each step's
                               counts scaled to its N(s) sequences as ``comparison`` does).

The per-bin rate is exact: the losses emit per-bin COUNTS and verl averages every metric over
micro-batches and ranks alike, so the ratio of the two averaged counts is the global rate
(see ``fspo_verl.losses.length_bins``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fspo_verl.analysis.figures import pyplot, save_figure
from fspo_verl.analysis.run_log import VAL_KEY, Run, keys, read_run, series
from fspo_verl.losses.length_bins import BIN_KEY

REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")


def clip_rate_series(run: Run) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """prefix -> bin name -> (steps, clip rate) from the per-bin count metrics; NaN where a bin is empty.

    Bins are ordered by their lower edge; only bins with both a ``seqs_`` and a ``clipped_`` key count.
    """
    found: dict[str, dict[tuple[int, str], set[str]]] = {}
    for key in keys(run):
        match = BIN_KEY.match(key)
        if match:
            bins = found.setdefault(match["prefix"], {})
            bins.setdefault((int(match["lo"]), f"len_{match['lo']}_{match['hi']}"), set()).add(match["kind"])
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for prefix, bins in sorted(found.items()):
        per_bin: dict[str, tuple[list[int], list[float]]] = {}
        for _, name in sorted(b for b, kinds in bins.items() if kinds == {"seqs", "clipped"}):
            steps, seqs = series(run, f"{prefix}/seqs_{name}")
            clipped = dict(zip(*series(run, f"{prefix}/clipped_{name}")))
            rates = [clipped[s] / n if n > 0 and s in clipped else float("nan") for s, n in zip(steps, seqs)]
            per_bin[name] = (steps, rates)
        if per_bin:
            out[prefix] = per_bin
    return out


def pooled_bin_rates(run: Run, prefix: str, names: list[str]) -> list[tuple[float, float | None, float | None]]:
    """Per bin (n, pooled rate, binomial standard error) over the run's steps; rate and se None for an empty bin.

    Each step's logged counts (means over micro-batches) are scaled to the step's N(s) sequences
    (``comparison.sequences_in_step``), so that every sequence weighs the same; a step without verl's token
    metrics counts its logged means as they are.
    """
    from fspo_verl.analysis.comparison import sequences_in_step

    seqs, clipped = [0.0] * len(names), [0.0] * len(names)
    for step, logged in sorted(run.items()):
        if any(f"{prefix}/seqs_{name}" not in logged for name in names):
            continue
        counts = [logged[f"{prefix}/seqs_{name}"] for name in names]
        if sum(counts) <= 0:
            continue
        try:
            scale = sequences_in_step(logged, "", step) / sum(counts)
        except (ValueError, ZeroDivisionError):
            scale = 1.0
        for i, name in enumerate(names):
            seqs[i] += scale * counts[i]
            clipped[i] += scale * logged.get(f"{prefix}/clipped_{name}", 0.0)
    out = []
    for n, c in zip(seqs, clipped):
        rate = min(max(c / n, 0.0), 1.0) if n > 0 else None
        out.append((n, rate, math.sqrt(rate * (1.0 - rate) / n) if rate is not None else None))
    return out



def _band(ax, run: Run, base: str, color: str) -> None:
    """Shade base/min..base/max when both were logged."""
    lo_steps, lows = series(run, f"{base}/min")
    highs = dict(zip(*series(run, f"{base}/max")))
    pairs = [(s, lo, highs[s]) for s, lo in zip(lo_steps, lows) if s in highs]
    if pairs:
        steps, lows, his = zip(*pairs)
        ax.fill_between(steps, lows, his, color=color, alpha=0.15, linewidth=0, label=f"{base} min..max")


def plot_reward(run: Run, out: Path) -> Path | None:
    key = next((k for k in REWARD_KEYS if series(run, k)[0]), None)
    val_keys = sorted(k for k in keys(run) if VAL_KEY.match(k))
    if key is None and not val_keys:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if key is not None:
        _band(ax, run, key.rsplit("/", 1)[0], "tab:blue")
        ax.plot(*series(run, key), color="tab:blue", marker="o", markersize=3, label=key)
    for i, vk in enumerate(val_keys):
        ax.plot(*series(run, vk), linestyle="--", marker="s", markersize=4, color=f"C{(i + 2) % 10}", label=vk)
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    ax.set_title("Reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, out)


def plot_response_length(run: Run, out: Path) -> Path | None:
    steps, means = series(run, "response_length/mean")
    if not steps:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    _band(ax, run, "response_length", "tab:green")
    ax.plot(steps, means, color="tab:green", marker="o", markersize=3, label="response_length/mean")
    ax.set_xlabel("training step")
    ax.set_ylabel("tokens")
    ax.set_title("Response length")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    clip_steps, clip = series(run, "response_length/clip_ratio")
    if clip_steps:
        ax2 = ax.twinx()
        (line,) = ax2.plot(clip_steps, clip, color="tab:red", linestyle=":", label="response_length/clip_ratio (right)")
        ax2.set_ylabel("share cut at max length")
        ax2.set_ylim(0, 1)
        handles, labels = handles + [line], labels + [line.get_label()]
    ax.legend(handles, labels, fontsize=8, loc="upper left")
    return save_figure(fig, plt, out)


def plot_clip_rates(run: Run, out: Path) -> Path | None:
    from fspo_verl.diagnostics.fairness_number import step_fairness

    rates = clip_rate_series(run)
    if not rates:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(rates), 2, figsize=(13, 4.2 * len(rates)), dpi=110, squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})  # fmt: skip
    for (ax, pooled_ax), (prefix, per_bin) in zip(axes, rates.items()):
        cmap = plt.get_cmap("viridis")
        colours = [cmap(i / max(len(per_bin) - 1, 1)) for i in range(len(per_bin))]
        labels = [name.removeprefix("len_").replace("_", "-") for name in per_bin]
        for colour, label, (steps, values) in zip(colours, labels, per_bin.values()):
            ax.plot(steps, values, marker="o", markersize=3, color=colour, label=label)
        overall_steps, overall = series(run, "actor/pg_clipfrac")
        if overall_steps:
            ax.plot(overall_steps, overall, color="black", linestyle="--", linewidth=1, label="actor/pg_clipfrac")
        lre_steps = sorted(s for s in run if f"{prefix}/seqs_{next(iter(per_bin))}" in run[s])
        if lre_steps:
            lre = [step_fairness(run[s]).get(f"{prefix}/length_reweighting_error", float("nan")) for s in lre_steps]
            ax.plot(lre_steps, lre, color="tab:red", linestyle=":", linewidth=1.5, label="length reweighting error")
        ax.set_title(f"Clip rate per response-length bin: {prefix}/clipped_len_* / seqs_len_*", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("share of sequences clipped")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="length bin", title_fontsize=8, ncol=2)

        pooled = pooled_bin_rates(run, prefix, list(per_bin))
        for i, (colour, (n, rate, se)) in enumerate(zip(colours, pooled)):
            if rate is not None:
                pooled_ax.errorbar([i], [rate], yerr=[se], color=colour, marker="o", markersize=6, capsize=4)
                pooled_ax.annotate(f"n={n:.0f}", (i, rate), textcoords="offset points", xytext=(6, 4), fontsize=7)
        total = sum(n for n, _, _ in pooled)
        if total > 0:
            overall_rate = sum(n * r for n, r, _ in pooled if r is not None) / total
            pooled_ax.axhline(overall_rate, color="black", linestyle="--", linewidth=1, label=f"all bins {overall_rate:.3f}")
            pooled_ax.legend(fontsize=8)
        pooled_ax.set_xticks(range(len(labels)), labels, fontsize=8)
        pooled_ax.set_xlabel("response-length bin")
        pooled_ax.set_ylabel("clip rate over the run (+- binomial s.e.)")
        pooled_ax.set_title(f"{prefix}: pooled over the run", fontsize=10)
        pooled_ax.set_ylim(bottom=0)
        pooled_ax.grid(alpha=0.3)
    return save_figure(fig, plt, out)


def plot_run(path: str | Path, out_dir: str | Path | None = None) -> dict[str, Path | None]:
    """Write the three PNGs; name -> written path, or None when the run logged none of its metrics."""
    path = Path(path)
    run = read_run(path)
    if not run:
        raise ValueError(f"{path}: the file holds no logged step; is it the JSONL of verl's file logger?")
    out_dir = Path(out_dir) if out_dir is not None else path.with_name(path.stem + "_plots")
    return {
        "reward.png": plot_reward(run, out_dir / "reward.png"),
        "response_length.png": plot_response_length(run, out_dir / "response_length.png"),
        "clip_rate_by_length.png": plot_clip_rates(run, out_dir / "clip_rate_by_length.png"),
    }


_MISSING = {
    "reward.png": "no critic/score/mean, critic/rewards/mean or val-core/*/reward metric",
    "response_length.png": "no response_length/mean metric",
    "clip_rate_by_length.png": (
        "no */seqs_len_* and */clipped_len_* count metrics; they come from loss_mode=fspo or sspo, and from "
        "verl's vanilla/gspo/geo_mean/sapo/cispo with policy_loss._target_=fspo_verl.config.FSPOPolicyLossConfig "
        "(the presets algorithm=grpo/gspo/gmpo/sapo/cispo set it)"
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fspo-verl plot", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run",
        help="JSONL written by verl's file logger (trainer.logger=[console,file]); or a run directory of "
        "`fspo-verl train` (its latest metrics_<n>.jsonl); or a sweep directory of `fspo-verl train -m` "
        "(one figure per metric comparing its jobs, fspo_verl.analysis.sweep_plot)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: <run>_plots next to the JSONL; "
                        "plots_<n>/ in a run directory; comparison/ in a sweep directory)")
    args = parser.parse_args(argv)
    if Path(args.run).is_dir():
        return _plot_directory(Path(args.run), args.out)
    try:
        written = plot_run(args.run, args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, where in written.items():
        print(f"wrote {where}" if where else f"skipped {name}: {_MISSING[name]}")
    if not any(written.values()):
        print(f"error: {args.run}: nothing to plot", file=sys.stderr)
        return 1
    return 0


def _plot_directory(directory: Path, out: str | None) -> int:
    from fspo_verl.analysis.sweep_plot import plot_sweep
    from fspo_verl.cli.run_dir import latest_metrics

    latest = latest_metrics(directory)
    if latest is not None:  # a run directory: its latest run, beside its metrics
        return main([str(latest), "--out", out or str(directory / latest.stem.replace("metrics_", "plots_"))])
    try:
        written = plot_sweep(directory, out)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for where in written.values():
        print(f"wrote {where}")
    if not written:
        print(f"error: {directory}: no job logged a compared metric", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
