"""``fspo-verl doctor``: does a bare ``import verl`` register everything fspo_verl provides?

verl loads plugins inside ``import verl`` and swallows their import errors at DEBUG level, so a broken
install removes every registration without a word. The doctor reproduces exactly what a Ray worker does,
in a fresh interpreter: ``import verl`` alone. It then reports the verl version, whether our entry point
loaded, each expected name and whether it is present, and on failure the import error verl hid; then whether
every verl name we patch or read privately exists (:mod:`fspo_verl.common.verl_internals`), naming the first that does not.
Exit status: 0 when everything is present, 1 otherwise.

``fspo-verl doctor --gpu`` then checks the node's GPU (:mod:`fspo_verl.cli.gpu_doctor`): CUDA, NCCL, our losses on
CUDA against CPU, their time against verl's vanilla, and a 5-step demo run; non-zero on any failure or skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from fspo_verl.common import verl_internals as _verl_internals

# Runs in a fresh interpreter; prints one JSON object on its last line.
_PROBE = r"""
import json, os, sys, traceback
report = {"python": sys.executable, "plugins_policy": os.getenv("VERL_USE_EXTERNAL_PLUGINS", "auto")}
try:
    import verl
except Exception:
    report["verl_error"] = traceback.format_exc()
    print(json.dumps(report)); sys.exit(0)
report["verl_version"] = getattr(verl, "__version__", "unknown")
report["entry_point_loaded"] = "fspo_verl" in sys.modules
from importlib.metadata import entry_points
report["entry_point_installed"] = [ep.value for ep in entry_points(group="verl.plugins") if ep.name == "fspo_verl"]
if report["entry_point_loaded"]:
    # what a worker sees after its own `import verl`
    try:
        from fspo_verl import _registration as r
        present = {kind: sorted(lookup()) for kind, lookup in r.REGISTRIES.items()}
        report["expected"] = [[k, n, n in present.get(k, [])] for k, n in r.EXPECTED]
        report["optional_errors"] = dict(r.LOAD_ERRORS)
    except Exception:
        report["registration_error"] = traceback.format_exc()
else:
    # verl did not load us, so a worker has none of our names; import directly to show what verl hid
    try:
        import fspo_verl
        from fspo_verl import _registration as r
        report["expected"] = [[k, n, False] for k, n in r.EXPECTED]
        report["import_error"] = None
    except Exception:
        report["import_error"] = traceback.format_exc()
print(json.dumps(report))
"""


def probe(env: dict[str, str] | None = None) -> dict:
    """Run the probe in a fresh interpreter (the current one's executable) and return its report.

    It runs from the temp directory, not the caller's: a Ray worker does not start in your checkout, so a
    source tree in the current directory must not stand in for the installed package.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        cwd=tempfile.gettempdir(),
        timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"probe_error": f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"}
    return json.loads(lines[-1])


def healthy(report: dict) -> bool:
    return (
        report.get("entry_point_loaded") is True
        and "expected" in report
        and all(ok for _, _, ok in report["expected"])
        and not report.get("optional_errors")
        and not report.get("verl_internals_missing")
    )


def format_report(report: dict) -> str:
    out = []
    if "probe_error" in report:
        return "probe failed: " + report["probe_error"]
    if "verl_error" in report:
        return "`import verl` itself failed:\n" + report["verl_error"]
    out.append(f"python:              {report['python']}")
    out.append(f"verl version:        {report['verl_version']}")
    out.append(f"VERL_USE_EXTERNAL_PLUGINS={report['plugins_policy']}")
    installed = report.get("entry_point_installed") or []
    out.append(f"entry point:         {'installed -> ' + installed[0] if installed else 'NOT INSTALLED (pip install fspo-verl)'}")
    out.append(f"loaded by verl:      {'yes' if report.get('entry_point_loaded') else 'NO'}")
    if report.get("import_error"):
        out.append("import error that verl hid:\n" + report["import_error"])
    for kind, name, ok in report.get("expected", []):
        out.append(f"  [{'ok' if ok else 'MISSING'}] {kind:<14} {name}")
    for module, err in (report.get("optional_errors") or {}).items():
        out.append(f"optional component {module} failed:\n{err}")
    if report.get("registration_error"):
        out.append("could not read fspo_verl's registrations:\n" + report["registration_error"])
    if "verl_internals_missing" in report:
        out.append(_verl_internals.report_line(report["verl_internals_missing"], report["verl_version"]))
    out.append("doctor: all good" if healthy(report) else "doctor: PROBLEMS FOUND")
    return "\n".join(out)


USAGE = "usage: fspo-verl doctor [--gpu]   (--gpu: also check this node's GPU, one line per check; fspo_verl.cli.gpu_doctor)"


def main(argv: list[str] | None = None) -> int:
    args = list(argv or [])
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    unknown = [a for a in args if a != "--gpu"]
    if unknown:
        print(f"fspo-verl doctor: unknown argument(s) {' '.join(unknown)}\n{USAGE}", file=sys.stderr)
        return 2
    report = probe()
    if "verl_version" in report:  # the verl names we patch or read privately (fspo_verl.common.verl_internals)
        report["verl_internals_missing"] = _verl_internals.missing_targets()
    print(format_report(report))
    status = 0 if healthy(report) else 1
    if "--gpu" in args:
        from fspo_verl.cli import gpu_doctor

        status = max(status, gpu_doctor.main())
    return status
