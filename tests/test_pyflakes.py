"""Static check of every Python file in the project: undefined names, unused imports, broken f-strings.

Code that runs only on a cluster (joining a running Ray cluster, a SLURM job's driver) is exercised by the
slow cluster tests alone; an undefined name there (``Path`` without its import, found by a real 2-node job)
should fail in seconds here instead. Ruff's pyflakes rules (F) and syntax errors (E9).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREES = ["fspo_verl", "hydra_plugins", "tests", "benchmarks", "recipes"]


def ruff_check(paths: list[str], cwd: Path) -> subprocess.CompletedProcess:
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is part of the test extra: pip install -e '.[test]'"
    return subprocess.run([str(ruff), "check", "--no-cache", "--select", "F,E9", "--output-format", "concise", *paths],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_no_pyflakes_errors():
    proc = ruff_check(TREES, REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_check_finds_an_undefined_name(tmp_path):
    """Negative control: the same command fails on a file that uses a name it never imports."""
    (tmp_path / "bad.py").write_text("def f():\n    return Path('.')\n")
    proc = ruff_check(["bad.py"], tmp_path)
    assert proc.returncode == 1 and "F821" in proc.stdout, proc.stdout
