"""``fspo-verl plot <sweep dir>``: compare the jobs of a sweep (``fspo-verl train -m ...``), one figure per metric.

A sweep directory holds one directory per job (Hydra's ``hydra.sweep.subdir``), each with its
``metrics_<n>.jsonl`` (:mod:`fspo_verl.cli.run_dir`; the latest run of a job is plotted) and Hydra's
``.hydra/overrides.yaml``. Each job's line is labelled by the overrides that differ between the jobs
(``algorithm=gspo data.seed=1``), falling back to the directory name.

Figures (``<sweep dir>/comparison/`` by default): ``COMPARED`` plus every validation reward/accuracy curve
any job logged (``val-core/<source>/(reward|acc)/mean@k``); a metric no job logged is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

from fspo_verl.analysis.figures import pyplot, save_figure
from fspo_verl.analysis.run_log import VAL_KEY, Run, keys, read_run, series
from fspo_verl.cli.run_dir import latest_metrics

#: training metrics compared across jobs (verl's names): reward, length, clipping, entropy, loss
COMPARED = ("critic/score/mean", "response_length/mean", "actor/pg_clipfrac", "actor/entropy", "actor/pg_loss")


def _overrides(job_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def sweep_runs(sweep_dir: str | Path) -> dict[str, Run]:
    """label -> the latest run of each job directory under ``sweep_dir`` that logged at least one step."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=_natural):
        metrics = latest_metrics(job_dir)
        if metrics is not None and metrics.stat().st_size > 0:
            jobs.append((job_dir, _overrides(job_dir), read_run(metrics)))
    if not jobs:
        raise ValueError(f"{sweep_dir}: no job directory with a non-empty metrics_<n>.jsonl; is it a sweep directory "
                         "of `fspo-verl train -m ...`?")
    shared = set.intersection(*(set(o) for _, o, _ in jobs))
    return {(" ".join(o for o in overrides if o not in shared) or job_dir.name): run for job_dir, overrides, run in jobs}


def _natural(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


def compared_metrics(runs: dict[str, Run]) -> list[str]:
    logged = set().union(*(keys(run) for run in runs.values()))
    return [k for k in COMPARED if k in logged] + sorted(k for k in logged if VAL_KEY.match(k))


def plot_sweep(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """One PNG per compared metric, one line per job; metric -> written path."""
    runs = sweep_runs(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "comparison"
    plt = pyplot()
    written = {}
    for metric in compared_metrics(runs):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, run in runs.items():
            steps, values = series(run, metric)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 3 else None, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by job")
        ax.legend(fontsize="small")
        written[metric] = save_figure(fig, plt, out_dir / (re.sub(r"[^A-Za-z0-9_.@-]+", "_", metric) + ".png"))
    return written
