"""``fspo-verl train`` as a Hydra application: each of Hydra's flags, -cn/-cp, and sweeps whose driver checks
stop everything before any job starts (basic and submitit_local launchers). Training itself runs in
tests/e2e/test_hydra_sweep.py."""

from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from fspo_verl.cli import main as cli
from fspo_verl.cli.presets import GROUPS, description, presets

#: a sweep where job 0 (opo with two epochs) breaks exact on-policy training and job 1 is fine
BAD_SWEEP = ["-m", "algorithm=opo,fspo", "actor_rollout_ref.actor.ppo_epochs=2"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        status = cli(["train", *argv])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Hydra's output directories are relative to the working directory


def test_help_lists_every_preset_with_its_one_line_description(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for group in GROUPS:
        section = out.split(f"\n{group}:\n", 1)[1].split("\n")
        listed = dict(line.split(None, 1) for line in section[: len(presets(group))])
        assert listed == {name: description(group, name) for name in presets(group)}
        assert all(listed.values())
    assert "--multirun,-m" in out and "$" not in out.replace("$(", "")  # Hydra substituted its flags
    assert "data.seed" in out and "hydra/launcher" in out


def test_descriptions_are_first_sentences_of_the_preset_files():
    assert description("cluster", "1gpu") == "One GPU (e.g. a single H100): vLLM rollout with TP 1, FSDP2 actor."
    assert description("algorithm", "fspo").startswith("FSPO: length-fair sequence clipping")
    assert all(len(description(g, n)) <= 100 for g in GROUPS for n in presets(g))


def test_cfg_job_resolve_prints_the_composed_config(capsys):
    status, out, _ = run(capsys, "--cfg", "job", "--resolve", "algorithm=gspo", "data.seed=3")
    assert status == 0
    config = yaml.safe_load(out)
    assert config["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == "gspo"
    assert config["data"]["seed"] == 3 and "hydra" not in config
    assert "${" not in out  # resolved
    status, out, _ = run(capsys, "--cfg", "job", "algorithm=gspo")
    assert "${" in out  # not resolved without --resolve


def test_cfg_hydra_shows_our_sweeper_and_run_directory(capsys):
    status, out, _ = run(capsys, "--cfg", "hydra")
    hydra_cfg = yaml.safe_load(out)["hydra"]
    assert status == 0
    assert hydra_cfg["sweeper"]["_target_"] == "hydra_plugins.fspo_verl_sweeper.checked_sweeper.CheckedSweeper"
    assert hydra_cfg["run"]["dir"] == "outputs/${trainer.project_name}/${trainer.experiment_name}"
    status, out, _ = run(capsys, "--cfg", "all")
    assert {"hydra", "trainer", "actor_rollout_ref"} <= set(yaml.safe_load(out))


def test_info_shows_the_search_path(capsys):
    status, out, err = run(capsys, "--info", "searchpath")
    assert status == 0
    assert "pkg://fspo_verl.configs" in out + err and "pkg://verl.trainer.config" in out + err


def test_shell_completion(capsys, monkeypatch):
    status, out, _ = run(capsys, "--shell-completion", "install=bash")
    assert status == 0 and "hydra_bash_completion" in out and out.rstrip().endswith("fspo-verl")
    # the installed script calls `fspo-verl -sc query=bash` with the line typed so far
    for line, expected in [("fspo-verl tr", {"train"}), ("fspo-verl train algorithm=fs", {"algorithm=fspo"}),
                           ("fspo-verl train cluster=", {"cluster=cpu", "cluster=8gpu", "cluster=multinode"})]:
        monkeypatch.setenv("COMP_LINE", line)
        assert cli(["-sc", "query=bash"]) == 0
        assert expected <= set(capsys.readouterr().out.split()), line


def test_config_name_and_path_select_a_users_config_built_on_ours(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my_experiment.yaml").write_text(textwrap.dedent("""\
        defaults:
          - fspo_trainer
          - override algorithm: sspo
          - _self_
        hydra:
          searchpath: [pkg://fspo_verl.configs, pkg://verl.trainer.config]
        trainer:
          total_training_steps: 7
        """))
    status, out, _ = run(capsys, "-cp", str(tmp_path / "mine"), "-cn", "my_experiment", "--cfg", "job")
    assert status == 0
    config = yaml.safe_load(out)
    assert config["trainer"]["total_training_steps"] == 7
    assert config["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == "sspo"


def test_a_single_run_that_fails_the_checks_starts_nothing(capsys, tmp_path):
    status, _, err = run(capsys, "algorithm=opo", "actor_rollout_ref.actor.ppo_epochs=2", f"hydra.run.dir={tmp_path}/run")
    assert status == 1
    assert "ERROR: actor_rollout_ref.actor.ppo_epochs=2 breaks exact on-policy training" in err
    assert "not started" in err and not list((tmp_path / "run").glob("metrics_*"))


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_sweep_with_one_bad_job_launches_none(capsys, tmp_path, launcher):
    if launcher.startswith("submitit"):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    status, _, err = run(capsys, *BAD_SWEEP, f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}/sweep")
    assert status == 1
    assert "job 0 algorithm=opo actor_rollout_ref.actor.ppo_epochs=2: ERROR: actor_rollout_ref.actor.ppo_epochs=2" in err
    assert "sweep not started: 1 of 2 job(s)" in err
    assert not (tmp_path / "sweep").exists()  # no job directory, no submitit folder: nothing was launched


def test_validate_still_lists_every_problem(capsys):
    status = cli(["validate", "algorithm=opo", "actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.entropy_coeff=0.1"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("ERROR:") >= 2 and "problem(s) found" in err


def test_validate_checks_a_sweep_in_one_process_job_by_job(capsys):
    """``validate -m`` expands the sweep exactly as ``train -m`` does and names the failing job."""
    from fspo_verl.cli.validate import sweep_jobs

    assert sweep_jobs(["algorithm=fspo,grpo", "data.seed=1,2", "trainer.total_training_steps=3"]) == [
        ["algorithm=fspo", "data.seed=1", "trainer.total_training_steps=3"],
        ["algorithm=fspo", "data.seed=2", "trainer.total_training_steps=3"],
        ["algorithm=grpo", "data.seed=1", "trainer.total_training_steps=3"],
        ["algorithm=grpo", "data.seed=2", "trainer.total_training_steps=3"],
    ]
    assert cli(["validate", "-m", "algorithm=fspo,grpo", "data.seed=1,2"]) == 0
    out, err = capsys.readouterr()
    assert out.count("# job ") == 4 and "# job 3: algorithm=grpo data.seed=2\n" in out
    assert "fspo-verl validate: OK (4 job(s))" in err

    assert cli(["validate", "--multirun", *BAD_SWEEP]) == 1
    err = capsys.readouterr().err
    assert "job 0 algorithm=opo actor_rollout_ref.actor.ppo_epochs=2: ERROR: actor_rollout_ref.actor.ppo_epochs=2" in err
    assert "in 1 of 2 job(s)" in err

    assert cli(["validate", "-m", "algorithm=fspo,,"]) == 1
    assert "ERROR: cannot read the sweep algorithm=fspo,," in capsys.readouterr().err


def test_validate_jobs_checks_one_sweep_a_line_in_one_process(tmp_path, capsys):
    """--jobs FILE: each line a sweep, the other arguments added to every job (recipes/claims_cpu.sh)."""
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# a comment, then a blank line\n\nalgorithm=grpo data.seed=1,2\nalgorithm=opo actor_rollout_ref.actor.ppo_epochs=2\n")
    assert cli(["validate", "--jobs", str(jobs), "trainer.total_training_steps=3"]) == 1
    out, err = capsys.readouterr()
    assert "# job 0: algorithm=grpo data.seed=1 trainer.total_training_steps=3\n" in out
    assert "# job 1: algorithm=grpo data.seed=2 trainer.total_training_steps=3\n" in out
    assert "job 2 algorithm=opo actor_rollout_ref.actor.ppo_epochs=2 trainer.total_training_steps=3: ERROR: " in err
    assert "fspo-verl validate: 1 problem(s) found in 1 of 3 job(s)" in err

    jobs.write_text("algorithm=fspo\n")
    assert cli(["validate", "--jobs", str(jobs)]) == 0
    assert "fspo-verl validate: OK (1 job(s))" in capsys.readouterr().err
    for argv, message in ((["--jobs"], "--jobs needs a file"), (["--jobs", str(tmp_path / "nope")], "cannot read it"),
                          (["--jobs", str(tmp_path)], "cannot read it")):  # fmt: skip
        assert cli(["validate", *argv]) == 1
        assert message in capsys.readouterr().err
    jobs.write_text("# only a comment\n")
    assert cli(["validate", "--jobs", str(jobs)]) == 1
    assert "no job (one sweep a line)" in capsys.readouterr().err


def test_list_still_works(capsys):
    assert cli(["list"]) == 0
    assert "algorithm=" in capsys.readouterr().out


def test_the_sweeper_plugin_is_discovered_by_hydra():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = {f"{cls.__module__}.{cls.__name__}" for cls in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.fspo_verl_sweeper.checked_sweeper.CheckedSweeper" in names
    assert os.environ.get("COMP_LINE") is None
