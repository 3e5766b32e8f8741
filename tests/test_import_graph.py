"""The package's import graph, read from the source with ``ast``: no circle, and no floor imports a higher one.

Every ``import``/``from ... import`` of an ``fspo_verl`` module counts, at module level and inside functions
alike (a function-level import is how a circle hides until the function runs). An import of
``fspo_verl.a.b.c`` is an edge to that module and to the package ``__init__`` of each folder on the way
(``fspo_verl.a``, ``fspo_verl.a.b``), because Python runs those first; the root ``fspo_verl`` is left out
(every import runs it, and it is the plugin's face). ``from fspo_verl.a import name`` is an edge to the
submodule ``fspo_verl.a.name`` when there is one, else to ``fspo_verl.a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fspo_verl"

#: the floors, lowest first; a module may import its own floor and lower ones only. The other top-level
#: modules (the one-line re-exports at old paths) are the package's face: nothing inside imports them.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("common",),  # leaf helpers: verl, OmegaConf and the standard library only
    ("losses", "advantages", "downsampling"),  # the algorithms: what verl's workers call
    ("diagnostics",),  # metrics logged while training (around the losses and verl's tracker)
    ("cpu", "rollout_hf", "agent_loop", "demo"),  # backends and the CPU demo's tasks
    ("_registration",),  # what the plugin registers into verl, and how to check that it is there
    ("preflight",),  # driver checks (the CPU backend registers its own)
    ("analysis", "cli"),  # offline analysis and the command line
)
#: one-line re-exports left at old paths users name (tests/test_old_paths.py): outside the floors, and
#: nothing inside the package imports them
SHIMS = {"fspo_verl.config", "fspo_verl.pods", "fspo_verl.cpu.agent_loop", "fspo_verl.diagnostics.comparison"}
#: allowed imports across a floor's own members or downwards that the floors alone would not allow
EXCEPTIONS = {
    ("cpu", "preflight"),  # the CPU backend registers its launcher check and raises its error type
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":
            modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the fspo_verl modules its source imports (see the module docstring for what counts)."""
    modules = _modules()

    def targets(name: str, importer: str) -> set[str]:
        while name not in modules:
            name = name.rpartition(".")[0]
        out = {name}
        parts = name.split(".")
        for i in range(2, len(parts)):  # the package __init__s on the way, not the root, not the importer's own
            ancestor = ".".join(parts[:i])
            if not (importer == ancestor or importer.startswith(ancestor + ".")):
                out.add(ancestor)
        return out

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("fspo_verl.") or name == "fspo_verl":
                    edges |= targets(name, module)
        graph[module] = edges - {module, "fspo_verl"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _floor(module: str) -> int | None:
    room = _room(module)
    for level, rooms in enumerate(FLOORS):
        if room in rooms:
            return level
    return None  # the package's face: top-level modules


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        here = _floor(module)
        if here is None or module in SHIMS:
            continue
        for target in sorted(edges):
            there = _floor(target)
            if (_room(module), _room(target)) in EXCEPTIONS:
                continue
            if there is None or there > here or target in SHIMS:
                bad.append(f"{module} -> {target}")
    return bad


GRAPH = import_graph()


def test_the_graph_is_read():
    """A parser that found no edge would pass every check below: known edges must be there."""
    assert "fspo_verl.losses.fspo" in GRAPH and "fspo_verl.common.registry_guard" in GRAPH["fspo_verl.losses.fspo"]
    assert "fspo_verl.losses" in GRAPH["fspo_verl.diagnostics.clip_rates"]  # the package __init__ on the way
    assert "fspo_verl.preflight.registry" in GRAPH["fspo_verl.preflight.sections"]
    assert "fspo_verl.analysis.sweep_plot" in GRAPH["fspo_verl.analysis.plotting"]  # a function-level import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert upward_imports({"fspo_verl.losses.x": {"fspo_verl.cli.app"}}) == ["fspo_verl.losses.x -> fspo_verl.cli.app"]


def test_no_import_circle():
    assert cycles(GRAPH) == []


def test_no_floor_imports_a_higher_one():
    assert upward_imports(GRAPH) == []


@pytest.mark.parametrize("room", ["losses", "advantages", "downsampling", "common"])
def test_algorithms_import_no_backend_and_no_analysis(room):
    forbidden = ("cpu", "rollout_hf", "agent_loop", "demo", "analysis", "cli", "preflight", "diagnostics")
    reached = {t for m, edges in GRAPH.items() if _room(m) == room for t in edges}
    assert sorted(t for t in reached if _room(t) in forbidden) == []


def test_nothing_inside_imports_an_old_path():
    assert sorted(f"{m} -> {t}" for m, edges in GRAPH.items() for t in edges if t in SHIMS) == []


def test_the_top_level_is_the_package_face():
    """Only the plugin's face, its registration, and one-line re-exports at old paths users name."""
    loose = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__", "_registration", "config", "pods"]
    for shim in ("config", "pods"):
        code = [line for line in (PACKAGE / f"{shim}.py").read_text().splitlines()
                if line.strip() and not line.startswith(('"""', "#")) and not line.endswith('"""')]
        assert len(code) == 1 and code[0].startswith("from fspo_verl."), code
