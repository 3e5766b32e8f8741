"""``fspo-verl plot <sweep dir>``: one figure per metric comparing a sweep's jobs, each job labelled by the
overrides that differ between jobs; ``fspo-verl plot <run dir>`` plots the directory's latest run."""

from __future__ import annotations

from pathlib import Path

from _verl_run_log import write_run
from test_plotting import assert_valid_png

from fspo_verl.analysis.plotting import main as plot_main
from fspo_verl.analysis.sweep_plot import compared_metrics, plot_sweep, sweep_runs
from fspo_verl.cli.run_dir import reserve_run


def make_sweep(root: Path) -> Path:
    """Two jobs as `fspo-verl train -m algorithm=fspo,sspo data.seed=0` lays them out (job 1 ran twice)."""
    sweep = root / "sweep"
    for num, loss in ((0, "fspo"), (1, "sspo")):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- algorithm={loss}\n- data.seed=0\n")
        runs = 2 if num == 1 else 1
        for seed in range(runs):
            write_run(reserve_run(job).metrics, steps=3, loss_mode=loss, seed=seed)
    (sweep / "jobs.json").write_text("[]\n")  # a file beside the jobs is ignored
    (sweep / "2").mkdir()  # a job that logged nothing (it failed before its first step) is left out
    return sweep


def test_jobs_are_labelled_by_what_differs_and_use_their_latest_run(tmp_path):
    runs = sweep_runs(make_sweep(tmp_path))
    assert list(runs) == ["algorithm=fspo", "algorithm=sspo"]
    assert sorted(runs["algorithm=sspo"]) == [0, 1, 2, 3]


def test_one_figure_per_metric(tmp_path):
    sweep = make_sweep(tmp_path)
    metrics = compared_metrics(sweep_runs(sweep))
    assert metrics[:2] == ["critic/score/mean", "response_length/mean"]
    assert "val-core/openai/gsm8k/reward/mean@1" in metrics
    written = plot_sweep(sweep)
    assert set(written) == set(metrics)
    assert written["critic/score/mean"] == sweep / "comparison" / "critic_score_mean.png"
    for png in written.values():
        assert_valid_png(png)


def test_the_plot_command_takes_a_sweep_or_a_run_directory(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    assert plot_main([str(sweep)]) == 0
    assert (sweep / "comparison" / "response_length_mean.png").is_file()
    assert plot_main([str(sweep / "1")]) == 0
    assert (sweep / "1" / "plots_1" / "reward.png").is_file()  # the job's latest run, beside its metrics
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plot_main([str(empty)]) == 2
    assert "no job directory with a non-empty metrics" in capsys.readouterr().err
