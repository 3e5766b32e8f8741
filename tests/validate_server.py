"""``fspo-verl validate`` served from the test process, for scripts that call it many times.

A launch script (``recipes/*.sh``, ``ray_job_submit.sh``) calls ``fspo-verl validate`` as a subprocess; each call
pays the import of verl and torch (7-15 s on 2 cores) again. :func:`serving` puts an ``fspo-verl`` first on the
scripts' PATH that sends ``validate``'s argv, environment, working directory and standard input over a Unix
socket to a thread of this process, which runs the real ``fspo_verl.cli.main`` with them (verl imported once)
and sends back its standard output, standard error and exit status, which the stand-in writes and exits with.
Every other subcommand is handed to the real console script. The scripts' own logic runs unchanged; only the
process boundary of ``validate`` is removed (the console script itself is launched for real by other tests).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

_STAND_IN = """#!{python}
import json, os, socket, sys
argv = sys.argv[1:]
if not argv or argv[0] != "validate":
    os.execv({real!r}, [{real!r}, *argv])
stdin = sys.stdin.read() if "-" in argv else ""
request = json.dumps({{"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "stdin": stdin}}).encode()
with socket.socket(socket.AF_UNIX) as conn:
    conn.connect({address!r})
    conn.sendall(request)
    conn.shutdown(socket.SHUT_WR)
    reply = json.loads(b"".join(iter(lambda: conn.recv(1 << 16), b"")))
sys.stdout.write(reply["stdout"])
sys.stderr.write(reply["stderr"])
sys.exit(reply["rc"])
"""


def _run(request: dict) -> dict:
    from fspo_verl.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.stdin = io.StringIO(request["stdin"])
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(request["argv"])
            except SystemExit as stop:
                rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:  # noqa: BLE001 - the console script would print the traceback and exit 1
                traceback.print_exc()
                rc = 1
    finally:
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return {"stdout": out.getvalue(), "stderr": err.getvalue(), "rc": rc}


def _serve(listener: socket.socket, served: list[list[str]]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed: the fixture is done
            return
        with conn:
            request = json.loads(b"".join(iter(lambda: conn.recv(1 << 16), b"")))
            served.append(request["argv"])
            conn.sendall(json.dumps(_run(request)).encode())


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[tuple[Path, list[list[str]]]]:
    """(a directory to put first on PATH, the argv of every validate served so far)."""
    real = Path(sys.executable).parent / "fspo-verl"
    address = str(directory / "validate.sock")
    assert len(address) < 100, f"a Unix socket path must be short: {address}"
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stand_in = bin_dir / "fspo-verl"
    stand_in.write_text(_STAND_IN.format(python=sys.executable, real=str(real), address=address))
    stand_in.chmod(0o755)
    served: list[list[str]] = []
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    listener.listen()
    thread = threading.Thread(target=_serve, args=(listener, served), daemon=True)
    thread.start()
    try:
        yield bin_dir, served
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not, on Linux)
        listener.close()
        thread.join(timeout=5)
