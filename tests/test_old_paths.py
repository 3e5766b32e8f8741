"""Every dotted path users and configs name still resolves, to the same object as the module's new home.

Old paths stay as one-line re-exports where a moved module is named outside the package (configs' ``_target_``,
``pkg://`` paths and ``agent_loop_manager_class``, the README's ``python -m`` commands); the entry points
(``verl.plugins``, the ``fspo-verl`` console script, Hydra's ``hydra_plugins``) are looked up as their
loaders look them up.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from verl.utils.import_utils import load_class_from_fqn, load_extern_object

CONFIGS = Path(__file__).resolve().parents[1] / "fspo_verl" / "configs"

#: old module -> new module, for the moved modules that keep a re-export at their old path
OLD_PATHS = {
    "fspo_verl.config": "fspo_verl.losses.config",
    "fspo_verl.pods": "fspo_verl.downsampling.replay_buffer",
    "fspo_verl.cpu.agent_loop": "fspo_verl.agent_loop.manager",
    "fspo_verl.diagnostics.comparison": "fspo_verl.analysis.comparison",
}


def _public(module) -> dict[str, object]:
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_every_public_name_of_a_moved_module_resolves_at_its_old_path(old):
    new = importlib.import_module(OLD_PATHS[old])
    shim = importlib.import_module(old)
    names = _public(new)
    assert names, f"{new.__name__} defines no public name: the comparison below would pass on nothing"
    for name, value in names.items():
        assert getattr(shim, name) is value, f"{old}.{name} is not {new.__name__}.{name}"


def test_the_named_paths_resolve_as_verl_resolves_them():
    from fspo_verl.agent_loop.manager import BatchedAgentLoopManager
    from fspo_verl.demo.reward import compute_score
    from fspo_verl.downsampling.replay_buffer import (
        PODSReplayBuffer,
        PODSReplayBufferAsync,
    )
    from fspo_verl.losses.config import FSPOPolicyLossConfig

    assert load_extern_object("pkg://fspo_verl.pods", "PODSReplayBuffer") is PODSReplayBuffer
    assert load_extern_object("pkg://fspo_verl.pods", "PODSReplayBufferAsync") is PODSReplayBufferAsync
    assert load_extern_object("pkg://fspo_verl.demo.reward", "compute_score") is compute_score
    assert load_class_from_fqn("fspo_verl.cpu.agent_loop.BatchedAgentLoopManager") is BatchedAgentLoopManager
    assert load_class_from_fqn("fspo_verl.config.FSPOPolicyLossConfig") is FSPOPolicyLossConfig


def _config_paths() -> list[str]:
    """Every ``fspo_verl`` dotted or ``pkg://`` name a config value gives (not comments, not config keys)."""
    found = set()
    for path in CONFIGS.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            line = line.split(" #", 1)[0]
            match = re.match(r"^\s*[\w.]+:\s*(pkg://)?(fspo_verl\.[\w.]+)\s*$", line)
            if match:
                found.add((match[1] or "") + match[2])
    return sorted(found)


def test_the_configs_name_paths():
    assert {"pkg://fspo_verl.pods", "pkg://fspo_verl.demo.reward", "fspo_verl.config.FSPOPolicyLossConfig",
            "fspo_verl.cpu.agent_loop.BatchedAgentLoopManager"} <= set(_config_paths())


@pytest.mark.parametrize("name", _config_paths())
def test_every_path_a_config_names_resolves(name):
    if name.startswith("pkg://"):
        importlib.import_module(name.removeprefix("pkg://"))
    else:
        module, _, attr = name.rpartition(".")
        assert getattr(importlib.import_module(module), attr) is not None


def _entry_point(group: str, name: str) -> importlib.metadata.EntryPoint:
    (point,) = [ep for ep in importlib.metadata.entry_points(group=group) if ep.name == name]
    return point


def test_the_entry_points_load():
    import fspo_verl
    from fspo_verl.cli import main

    assert _entry_point("verl.plugins", "fspo_verl").load() is fspo_verl
    assert _entry_point("console_scripts", "fspo-verl").load() is main


def test_hydra_finds_the_sweeper():
    """``hydra/sweeper=fspo_verl``: Hydra scans the ``hydra_plugins`` namespace package for Sweeper subclasses."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    found = {f"{cls.__module__}.{cls.__qualname__}" for cls in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.fspo_verl_sweeper.checked_sweeper.CheckedSweeper" in found  # Hydra re-imports it: by name


@pytest.mark.parametrize("module", ["fspo_verl.cli", "fspo_verl.diagnostics.comparison"])
def test_python_dash_m_still_runs(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
