"""A run's files (fspo_verl.cli.run_dir): no run can truncate another run's metrics through verl's file logger."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

from omegaconf import OmegaConf

from fspo_verl.cli.run_dir import (
    VERL_DEFAULT_CHECKPOINT_DIR,
    latest_metrics,
    place_checkpoints,
    reserve_run,
    run_numbers,
)


def _log_with_verl(files, step: int) -> None:
    """What verl's driver does with the path: its FileLogger opens VERL_FILE_LOGGER_PATH with mode 'wb'."""
    from verl.utils.tracking import FileLogger

    old = os.environ.get("VERL_FILE_LOGGER_PATH")
    os.environ["VERL_FILE_LOGGER_PATH"] = files.logger_environment()["VERL_FILE_LOGGER_PATH"]
    try:
        logger = FileLogger("project", "experiment")
        logger.log({"critic/score/mean": float(step)}, step=step)
        logger.finish()
    finally:
        if old is None:
            os.environ.pop("VERL_FILE_LOGGER_PATH")
        else:
            os.environ["VERL_FILE_LOGGER_PATH"] = old


def test_deleting_an_older_run_never_makes_a_new_run_overwrite_a_later_one(tmp_path):
    # issue 12: with two runs logged and the first one's file deleted, counting the files (the old rule)
    # named the next run metrics_1.jsonl and verl's FileLogger truncated the second run's history.
    first, second = reserve_run(tmp_path), reserve_run(tmp_path)
    _log_with_verl(first, 1)
    _log_with_verl(second, 2)
    history = second.metrics.read_bytes()
    assert b'"step":2' in history
    first.metrics.unlink()

    third = reserve_run(tmp_path)
    _log_with_verl(third, 3)
    assert second.metrics.read_bytes() == history  # the second run's history survives
    assert third.index == 2
    assert run_numbers(tmp_path) == [1, 2] and latest_metrics(tmp_path) == third.metrics


def test_runs_starting_together_get_distinct_files(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        reserved = list(pool.map(lambda _: reserve_run(tmp_path), range(32)))
    assert sorted(r.index for r in reserved) == list(range(32))


def test_each_run_has_its_own_files_and_the_loggers_point_at_them(tmp_path):
    files = reserve_run(tmp_path / "job")
    env = files.logger_environment()
    assert env["VERL_FILE_LOGGER_PATH"].endswith("job/metrics_0.jsonl") and files.metrics.is_file()
    assert env["TENSORBOARD_DIR"].endswith("job/tensorboard")
    assert (files.config.name, files.plots.name, files.status.name) == ("config_0.yaml", "plots_0", "status_0.json")
    record = files.write_status("failed", error="boom")
    assert json.loads(files.status.read_text()) == record and record["status"] == "failed"


def test_checkpoints_go_to_the_run_directory_unless_the_user_chose_a_place(tmp_path):
    default = OmegaConf.create({"trainer": {"project_name": "p", "experiment_name": "e",
                                            "default_local_dir": VERL_DEFAULT_CHECKPOINT_DIR}})
    assert place_checkpoints(default, tmp_path) == tmp_path.resolve() / "checkpoints"
    chosen = OmegaConf.create({"trainer": {"default_local_dir": "/shared/ckpt"}})
    assert str(place_checkpoints(chosen, tmp_path)) == "/shared/ckpt"
    assert str(chosen.trainer.default_local_dir) == "/shared/ckpt"


def test_verl_default_checkpoint_dir_is_still_the_one_we_recognise():
    from pathlib import Path

    import verl

    verl_config = OmegaConf.load(Path(verl.__file__).parent / "trainer" / "config" / "ppo_trainer.yaml")
    raw = OmegaConf.to_container(verl_config.trainer, resolve=False)["default_local_dir"]
    assert raw == VERL_DEFAULT_CHECKPOINT_DIR
