"""Old path of :mod:`fspo_verl.analysis.comparison` (``python -m fspo_verl.diagnostics.comparison`` still runs it)."""

from fspo_verl.analysis.comparison import *  # noqa: F401,F403

if __name__ == "__main__":
    import runpy

    runpy.run_module("fspo_verl.analysis.comparison", run_name="__main__")
