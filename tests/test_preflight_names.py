"""Unknown names list the registered ones, and say when fspo_verl is disabled or a component failed to load."""

from __future__ import annotations

from fspo_verl import _registration
from fspo_verl.cli.validate import compose
from fspo_verl.preflight.names import check_names

LOSS = "actor_rollout_ref.actor.policy_loss.loss_mode"


def _errors(overrides: list[str]) -> list[str]:
    return check_names(compose(overrides)).errors


def test_unknown_loss_lists_the_registered_names_and_the_closest():
    (error,) = _errors([f"{LOSS}=fspoo"])
    assert error.startswith(f"{LOSS}=fspoo:") and "did you mean fspo?" in error
    assert all(name in error for name in ("vanilla", "gspo", "fspo", "sspo"))


def test_unknown_name_says_the_plugin_is_disabled(monkeypatch):
    monkeypatch.setenv("VERL_USE_EXTERNAL_PLUGINS", "none")
    errors = _errors([f"{LOSS}=fspoo"])
    assert any(e.startswith(f"{LOSS}=fspoo") and "VERL_USE_EXTERNAL_PLUGINS=none" in e for e in errors), errors


def test_unknown_rollout_names_the_component_that_failed_to_load(monkeypatch):
    monkeypatch.setitem(_registration.LOAD_ERRORS, "fspo_verl.cpu", "Traceback ...\nModuleNotFoundError: No module named 'uvicorn'")
    (error,) = _errors(["actor_rollout_ref.rollout.name=hff"])
    assert "fspo_verl.cpu failed to load (ModuleNotFoundError: No module named 'uvicorn')" in error


def test_registered_names_pass():
    assert _errors(["algorithm=opo"]) == [] and _errors(["algorithm=sspo"]) == []
