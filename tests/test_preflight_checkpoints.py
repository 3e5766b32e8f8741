"""A half-written checkpoint is found in the driver, named, and the message gives overrides that work.

Layout and damage as a crash during saving leaves them (tests/_bad_inputs.make_checkpoints): verl's
``global_step_<N>/actor/{model,optim,extra_state}_world_size_W_rank_r.pt`` plus the tracker file.
"""

from __future__ import annotations

import re
import shlex

import pytest
from _bad_inputs import make_checkpoints

from fspo_verl.cli import main as cli
from fspo_verl.cli.validate import compose
from fspo_verl.preflight.registry import run_checks


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR: ")]


def _checkpoint_errors(overrides: list[str]) -> list[str]:
    return [e for e in run_checks(compose(overrides)).errors if "checkpoint" in e or "resume" in e]


def test_truncated_shard_is_named_and_the_printed_override_resumes_the_intact_step(tmp_path, capsys):
    root = make_checkpoints(tmp_path / "ckpt", steps=(4, 8), truncate_latest=True)
    assert cli(["validate", f"trainer.default_local_dir={root}"]) == 1
    (line,) = [e for e in _errors(capsys) if e.startswith("ERROR: trainer.resume_mode=auto")]
    assert "global_step_8/actor/model_world_size_2_rank_1.pt is 0 bytes" in line
    overrides = re.search(r"with (trainer\.resume_mode=resume_path trainer\.resume_from_path=\S+)", line)[1]
    assert overrides.endswith("global_step_4")
    # the printed overrides, pasted, pass the checks
    assert _checkpoint_errors([f"trainer.default_local_dir={root}", *shlex.split(overrides)]) == []


def test_intact_checkpoint_passes(tmp_path):
    root = make_checkpoints(tmp_path / "ckpt", steps=(4, 8))
    assert _checkpoint_errors([f"trainer.default_local_dir={root}"]) == []


def test_no_intact_checkpoint_left_says_start_afresh(tmp_path):
    root = make_checkpoints(tmp_path / "ckpt", steps=(8,), truncate_latest=True)
    (error,) = _checkpoint_errors([f"trainer.default_local_dir={root}"])
    assert "trainer.resume_mode=disable" in error


def test_resume_path_to_a_damaged_step_is_rejected(tmp_path):
    root = make_checkpoints(tmp_path / "ckpt", steps=(4, 8), truncate_latest=True)
    (error,) = _checkpoint_errors(["trainer.resume_mode=resume_path", f"trainer.resume_from_path={root}/global_step_8"])
    assert error.startswith("trainer.resume_from_path=") and "global_step_4" in error


@pytest.mark.parametrize("damage", ["half_a_shard", "missing_rank", "missing_actor_dir", "bad_json", "truncated_safetensors"])
def test_each_kind_of_damage_is_found(tmp_path, damage):
    from fspo_verl.preflight.checkpoints import damaged_files

    root = make_checkpoints(tmp_path / "ckpt", steps=(8,))
    step = root / "global_step_8"
    assert damaged_files(step) == []
    shard = step / "actor" / "model_world_size_2_rank_0.pt"
    if damage == "half_a_shard":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "missing_rank":
        shard.unlink()
    elif damage == "missing_actor_dir":
        for f in (step / "actor").iterdir():
            f.unlink()
        (step / "actor").rmdir()
    elif damage == "bad_json":
        (step / "actor" / "fsdp_config.json").write_text('{"FSDP_version": 2,')
    else:
        import torch
        from safetensors.torch import save_file

        target = step / "actor" / "huggingface" / "model.safetensors"
        target.parent.mkdir()
        save_file({"w": torch.zeros(64, 64)}, str(target))
        target.write_bytes(target.read_bytes()[:-100])
    assert damaged_files(step), damage
