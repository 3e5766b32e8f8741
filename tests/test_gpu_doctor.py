"""``fspo-verl doctor --gpu``: the real no-GPU path of this CPU machine (one line saying so, every GPU check
skipped and not passed, exit 1, no traceback), and the report's format and exit status with fake checks."""

from __future__ import annotations

import pytest
import torch

from fspo_verl.cli import doctor, gpu_doctor
from fspo_verl.cli.gpu_doctor import Skip, run_checks, summary

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the path of a machine without a GPU")


def test_without_a_gpu_one_line_says_so_every_check_is_skipped_and_the_exit_status_is_1(capsys):
    status = gpu_doctor.main()
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert status == 1
    assert "Traceback" not in out.out + out.err
    assert lines[0].startswith("[FAIL] cuda       no CUDA GPU visible to torch")
    names = [name for name, _ in gpu_doctor.CHECKS]
    assert len(lines) == len(names) + 1  # one line per check, then the summary
    for line, name in zip(lines[1:], names[1:]):
        assert line.startswith(f"[skip] {name}"), line
    assert "[ok]" not in out.out
    assert lines[-1] == f"doctor --gpu: FAILED: cuda; skipped (not passed): {', '.join(names[1:])}"


def test_the_cli_adds_the_gpu_checks_to_the_registration_report(monkeypatch, capsys):
    """``fspo-verl doctor --gpu`` on this machine: the registrations (stubbed healthy: tested elsewhere) and then the
    real GPU checks; the exit status is the worse of the two."""
    healthy = {"python": "py", "verl_version": "0.9.1", "plugins_policy": "auto", "entry_point_installed": ["fspo_verl"],
               "entry_point_loaded": True, "expected": [["policy_loss", "fspo", True]], "optional_errors": {}}  # fmt: skip
    monkeypatch.setattr(doctor, "probe", lambda env=None: healthy)
    assert doctor.main([]) == 0
    assert doctor.main(["--gpu"]) == 1
    out = capsys.readouterr().out
    assert "doctor: all good" in out and "[FAIL] cuda" in out
    assert doctor.main(["--gpus"]) == 2


def _fake(detail=None, raises=None):
    def check():
        if raises is not None:
            raise raises
        return detail

    return check


def test_every_check_passing_exits_0_with_one_line_each():
    lines: list[str] = []
    results = run_checks([("cuda", _fake("H200")), ("timing", _fake("fspo 0.80x")), ("demo", _fake("step 1.9 s"))], lines.append)
    assert lines == ["[ok] cuda       H200", "[ok] timing     fspo 0.80x", "[ok] demo       step 1.9 s"]
    assert summary(results) == ("doctor --gpu: all 3 checks passed", 0)


def test_a_failing_check_is_named_and_later_checks_still_run():
    lines: list[str] = []
    results = run_checks(
        [("cuda", _fake("H200")), ("loss:fspo", _fake(raises=ValueError("loss 1.0 on cuda, 2.0 on cpu"))),
         ("demo", _fake("step 1.9 s"))],
        lines.append,
    )  # fmt: skip
    assert lines[1] == "[FAIL] loss:fspo  ValueError: loss 1.0 on cuda, 2.0 on cpu"
    assert lines[2].startswith("[ok] demo")
    assert summary(results) == ("doctor --gpu: FAILED: loss:fspo", 1)


def test_a_skipped_check_is_not_a_pass():
    results = run_checks([("cuda", _fake("H200")), ("nccl", _fake(raises=Skip("needs a CUDA GPU")))], lambda _: None)
    assert results[1].status == "skip"
    assert summary(results) == ("doctor --gpu: skipped (not passed): nccl", 1)


def test_when_the_first_check_fails_the_others_do_not_run():
    ran = []
    results = run_checks(
        [("cuda", _fake(raises=gpu_doctor.CheckFailed("no CUDA GPU visible"))), ("nccl", lambda: ran.append(1) or "x")],
        lambda _: None,
    )
    assert ran == [] and [r.status for r in results] == ["FAIL", "skip"]
