"""Run ``fspo-verl`` in a subprocess that records any attempt to start Ray.

``python tests/_no_ray_cli.py MARKER validate|train ...``: ``ray.init`` is replaced by a function that writes
MARKER and exits with :data:`RAY_STARTED`, so a command that would start Ray leaves MARKER behind instead.
After the command, any Ray process that is a child of this one also counts as a start.
"""

from __future__ import annotations

import sys
from pathlib import Path

RAY_STARTED = 97


def main() -> int:
    marker, argv = Path(sys.argv[1]), sys.argv[2:]
    import psutil
    import ray

    def record_init(*args, **kwargs):
        marker.write_text("ray.init called\n")
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(RAY_STARTED)

    ray.init = record_init
    from fspo_verl.cli import main as cli

    status = cli(argv)
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    if ray.is_initialized() or any(n.startswith(("raylet", "gcs_server")) for n in children):
        marker.write_text(f"ray running after the command: {children}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
