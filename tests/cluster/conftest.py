"""Real clusters on this machine (loopback only), for the tests under tests/cluster/.

Every test here is marked ``cluster`` (``-m "not cluster"`` skips them locally). A cluster that cannot start
fails its tests; nothing here skips. Each cluster module (``ray_cluster.py``, ...) owns its set-up and
tear-down; this file only wires them to pytest.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session", autouse=True)
def _sigterm_tears_clusters_down():
    """SIGTERM (a CI time-out, ``kill``) ends pytest at once by default, running no fixture's tear-down, so a
    session's SLURM daemons or Ray nodes outlived it. As a KeyboardInterrupt, pytest stops the run and tears
    every fixture down, clusters included."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-node Ray cluster on 127.0.0.1 (6 logical CPUs, 1 logical GPU per node), stopped by its own PIDs."""
    from cluster.ray_cluster import RayCluster

    with RayCluster(nodes=2) as cluster:
        yield cluster
