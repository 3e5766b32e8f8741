"""The table of verl internals we depend on: it matches the installed verl, the source and the docs, and the
doctor names the first target a verl lacks; ``patch_once`` is the one "already patched" idiom."""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import types
from pathlib import Path

import pytest

from fspo_verl.common import verl_internals as vi
from fspo_verl.cli import doctor
from fspo_verl.common.verl_internals import (
    TABLE,
    Internal,
    is_patched,
    mark_patched,
    patch_once,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fspo_verl"
BOGUS = Internal("verl.trainer.ppo.core_algos", "no_such_fn", "patch", "a name no verl has", "fspo_verl.cli.doctor")


def _sources() -> dict[str, tuple[str, ast.Module]]:
    """our module name -> (source, parsed tree), for every module of the package"""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text()
        out[name] = (text, ast.parse(text))
    return out


SOURCES = _sources()


# --- the table against the installed verl, through the doctor ---------------------------------------------

@pytest.fixture(scope="module")
def probe_report() -> dict:
    report = doctor.probe()
    assert doctor.healthy(report), doctor.format_report(report)
    return report


def test_doctor_passes_with_the_real_table(probe_report, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "probe", lambda env=None: dict(probe_report))
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    assert f"verl internals:      all {len(TABLE)} targets present (checked against verl 0.9.1)" in out
    assert "doctor: all good" in out


def test_doctor_names_the_first_missing_target_and_fails(probe_report, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "probe", lambda env=None: dict(probe_report))
    monkeypatch.setattr(vi, "TABLE", (*TABLE, BOGUS, Internal("verl.no_such_module", "x", "patch", "", "fspo_verl")))
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("verl internals:")]
    assert lines == [(
        "verl internals:      MISSING verl.trainer.ppo.core_algos.no_such_fn (and 1 more) in the installed verl "
        "0.9.1; fspo_verl was checked against verl 0.9.1; fix: pip install verl==0.9.1, or report this line to "
        "fspo_verl"
    )], out
    assert "doctor: PROBLEMS FOUND" in out


def test_missing_targets_walks_attribute_paths_and_modules():
    real = Internal("verl.workers.engine.base", "EngineRegistry.get_engine_cls", "patch", "", "fspo_verl")
    nested_bogus = Internal("verl.workers.engine.base", "EngineRegistry.no_such_method", "patch", "", "fspo_verl")
    details = vi.missing_details([real, BOGUS, nested_bogus, Internal("verl.no_such_module", "x", "patch", "", "")])
    assert [target for target, _ in details] == [
        "verl.trainer.ppo.core_algos.no_such_fn",
        "verl.workers.engine.base.EngineRegistry.no_such_method",
        "verl.no_such_module.x",
    ]
    assert details[0][1].startswith("AttributeError") and details[2][1].startswith("ModuleNotFoundError")


# --- the table against our source, so it cannot go stale ---------------------------------------------------

def test_rows_are_well_formed():
    assert len({row.target for row in TABLE}) == len(TABLE)
    for row in TABLE:
        assert row.kind in vi.KINDS and row.module.startswith("verl.") and row.why and row.checked == ("0.9.1",), row


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.target)
def test_each_rows_where_module_exists_and_names_the_attribute(row):
    assert importlib.util.find_spec(row.where) is not None, f"{row.target}: no module {row.where}"
    name = row.attr.split(".")[-1]
    if row.kind == "registry insert" and name == "register":  # PlatformRegistry.register(...) / .register(...)
        name = row.attr.split(".")[0]
    assert re.search(rf"\b{re.escape(name)}\b", SOURCES[row.where][0]), f"{row.where} never names {name}"


def _calls(tree: ast.Module, func_name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == func_name:
            yield node


def test_every_patch_once_call_is_in_the_table():
    patch_rows = {(row.where, row.attr.split(".")[-1]) for row in TABLE if row.kind == "patch"}
    sites = []
    for module, (_, tree) in SOURCES.items():
        for call in _calls(tree, "patch_once"):
            attr = call.args[1]
            assert isinstance(attr, ast.Constant), f"{module}:{call.lineno}: patch_once's attribute must be a literal"
            sites.append((module, attr.value))
    assert len(sites) >= 11  # the cpu fixes (7), validate_config, the trainer (2), the loss lookup, Tracking.log
    assert [site for site in sites if site not in patch_rows] == []


def test_every_private_verl_import_and_hooked_module_is_in_the_table():
    targets = {row.target for row in TABLE}
    modules = {row.module for row in TABLE}
    for module, (_, tree) in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("verl"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        assert f"{node.module}.{alias.name}" in targets, f"{module}: private import {alias.name}"
        for call in _calls(tree, "when_imported"):
            hooked = call.args[0]
            if isinstance(hooked, ast.Name):  # when_imported(TARGET_MODULE, ...)
                hooked = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                              and any(getattr(t, "id", None) == hooked.id for t in n.targets))
            if isinstance(hooked, ast.Constant) and hooked.value.startswith("verl"):
                assert hooked.value in modules, f"{module}: hooks {hooked.value}, which the table never names"


def test_one_already_patched_idiom():
    """No patch site keeps a marker of its own: the old per-site markers and hand-set marks are gone."""
    for module, (text, _) in SOURCES.items():
        if module == "fspo_verl.common.verl_internals":
            continue
        assert not re.search(r"_fspo_\w*patched", text), module
        assert not re.search(r"setattr\([^)]*,\s*True\)", text), module


def test_docs_show_the_table():
    doc = (ROOT / "docs" / "verl-internals.md").read_text()
    assert vi.markdown_table() in doc


# --- patch_once ----------------------------------------------------------------------------------------------

def test_patch_once_replaces_a_module_function_once_and_keeps_the_original():
    module = types.ModuleType("fake_verl")
    module.double = lambda x: 2 * x
    original = module.double
    made = []

    def make(orig):
        made.append(orig)

        @functools.wraps(orig)
        def plus_one(x):
            return orig(x) + 1

        return plus_one

    first = patch_once(module, "double", make)
    second = patch_once(module, "double", make)
    assert first is second is module.double and made == [original]  # the factory ran once, with verl's function
    assert module.double(3) == 7 and original(3) == 6  # the original is kept (closure) and unchanged
    assert is_patched(module.double) and not is_patched(original)


def test_patch_once_keeps_classmethods_and_marks_methods_and_classes():
    class Registry:
        @classmethod
        def get(cls, key):
            return f"{cls.__name__}:{key}"

        def run(self):
            return "verl"

    patch_once(Registry, "get", lambda orig: lambda cls, key: orig(cls, "cuda") if key == "cpu" else orig(cls, key))
    patch_once(Registry, "get", lambda orig: pytest.fail("patched twice"))
    assert isinstance(vars(Registry)["get"], classmethod) and Registry.get("cpu") == "Registry:cuda"
    assert is_patched(Registry.get)  # a bound method reads its function's mark

    patch_once(Registry, "run", lambda orig: lambda self: orig(self) + "+ours")
    assert Registry().run() == "verl+ours" and is_patched(Registry().run)

    holder = types.SimpleNamespace(Policy=Registry)
    patch_once(holder, "Policy", lambda cls: mark_patched(type("Policy", (cls,), {})))
    assert holder.Policy is not Registry and issubclass(holder.Policy, Registry) and is_patched(holder.Policy)
    assert not is_patched(Registry)


def test_is_patched_wants_our_mark_exactly():
    class Anything:  # an object answering every attribute (a mock) is not "patched"
        def __getattr__(self, name):
            return "yes"

    assert not is_patched(Anything()) and not is_patched(None) and not is_patched(print)
