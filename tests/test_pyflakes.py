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


def test_no_pyflakes_errors():
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is part of the test extra: pip install -e '.[test]'"
    proc = subprocess.run([str(ruff), "check", "--no-cache", "--select", "F,E9", "--output-format", "concise", *TREES],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_check_finds_an_undefined_name(tmp_path):
    """Negative control: the same command fails on a file that uses a name it never imports."""
    (tmp_path / "bad.py").write_text("def f():\n    return Path('.')\n")
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "--no-cache", "--select", "F,E9", "--output-format", "concise", "bad.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "F821" in proc.stdout, proc.stdout
