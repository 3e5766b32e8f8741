"""Run a function right after a module is imported, without importing it ourselves.

The CPU fixes patch verl modules that are heavy to import (the engine registry pulls in every training
engine). The plugin is loaded on every ``import verl``, so importing them eagerly would slow down and
possibly break every verl process. A post-import hook patches a module at the moment something else
imports it, or at once if it is already in ``sys.modules``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType

_HOOKS: dict[str, list[Callable[[ModuleType], None]]] = {}
_LOCK = threading.RLock()


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of hooked modules so that their hooks run after the module body executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, fullname: str) -> None:
        self._inner = inner
        self._fullname = fullname

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _run_hooks(self._fullname, module)

    def __getattr__(self, name):  # get_source, is_package, ... for tracebacks and pkgutil
        return getattr(self._inner, name)


_FINDER = _PostImportFinder()


def _run_hooks(fullname: str, module: ModuleType) -> None:
    with _LOCK:
        hooks = _HOOKS.pop(fullname, [])
    for hook in hooks:
        hook(module)


def when_imported(fullname: str, hook: Callable[[ModuleType], None]) -> None:
    """Call ``hook(module)`` once ``fullname`` is imported (now, if it already is)."""
    module = sys.modules.get(fullname)
    if module is not None:
        hook(module)
        return
    with _LOCK:
        _HOOKS.setdefault(fullname, []).append(hook)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
