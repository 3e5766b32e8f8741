"""A real multi-node Ray cluster on 127.0.0.1 for tests: one head and N-1 worker raylets on this host.

Each node is a separate ``ray start`` (its own raylet, object store and node id), all bound to 127.0.0.1,
with every port chosen free (so parallel clusters on the same machine do not collide), one temp dir of its
own, and token authentication off (``RAY_AUTH_MODE=disabled``, loopback only). Each ``ray start`` runs in a
new session (``setsid``), so the cluster is stopped by its own process groups and then by the PIDs whose
command line holds its temp dir. Never a machine-wide ``ray stop``.

Also usable by hand::

    python tests/cluster/ray_cluster.py 2      # prints RAY_ADDRESS=..., stops on Enter
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: logical resources of each node: enough for the CPU preset's 1 FSDP worker per node plus TransferQueue
#: storage units, controller and head-room (fspo_verl.preflight.cpu.required_logical_cpus), spread over nodes
NODE_CPUS = 6
NODE_GPUS = 1
#: our choice: the object store is plasma shared memory; small, because many tests share a 24 GB host
OBJECT_STORE_BYTES = 300 * 1024**2
START_TIMEOUT_S = 120
#: environment variable naming the cluster's temp dir in every process of the cluster
CLUSTER_MARK = "FSPO_TEST_RAY_CLUSTER"

#: the per-node ports `ray start` takes; each gets a free port of its own
PORT_OPTIONS = ("node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
                "dashboard-agent-grpc-port", "dashboard-agent-listen-port")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (held open together, so all differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _ray_exe() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def pids_with_arg(text: str, where: str = "cmdline") -> list[int]:
    """PIDs (not this process) whose command line (or, with where="environ", environment) contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            content = (entry / where).read_bytes().decode(errors="replace")
            content = content.replace("\0", " ") if where == "cmdline" else content
        except OSError:
            continue
        if text in content:
            found.append(int(entry.name))
    return found


@dataclass
class RayNode:
    index: int
    ports: dict[str, int]
    pgid: int = 0

    @property
    def node_manager_port(self) -> int:
        return self.ports["node-manager-port"]

    def raylet_pid(self) -> int:
        """The PID of this node's raylet (the one listening on this node's node-manager port)."""
        for pid in pids_with_arg(f"--node_manager_port={self.node_manager_port}"):
            try:
                if Path(f"/proc/{pid}/exe").resolve().name == "raylet":
                    return pid
            except OSError:
                continue
        raise LookupError(f"no raylet with --node_manager_port={self.node_manager_port}")


@dataclass
class RayCluster:
    """``with RayCluster(nodes=2) as cluster:`` -> ``cluster.dashboard_url``, ``cluster.gcs_address``."""

    nodes: int = 2
    cpus_per_node: int = NODE_CPUS
    gpus_per_node: int = NODE_GPUS
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fspo-ray-", dir="/tmp")))
    started: list[RayNode] = field(default_factory=list)

    def __post_init__(self):
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.log_dir = self.temp_dir / "start-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------------------------------
    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for ``ray`` commands against this cluster: no auth (loopback), nothing inherited
        that would point Ray elsewhere, and no PYTHONPATH: jobs get the plugin from their runtime_env."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "PYTHONPATH")}
        env["RAY_AUTH_MODE"] = "disabled"
        # every process of the cluster inherits this (raylets pass their environment to the workers they
        # start, and workers rename themselves `ray::...`, so their command lines do not name the temp dir)
        env[CLUSTER_MARK] = str(self.temp_dir)
        env.update(extra)
        return env

    def _start_node(self, head: bool) -> RayNode:
        node = RayNode(len(self.started), dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True)))
        args = [_ray_exe(), "start", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus_per_node}",
                f"--num-gpus={self.gpus_per_node}", f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats",
                *(f"--{name}={port}" for name, port in node.ports.items())]
        if head:
            args += ["--head", f"--port={self.gcs_port}", f"--temp-dir={self.temp_dir}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={self.client_port}",
                     "--include-dashboard=true"]
        else:
            # a temp dir per node, as separate hosts have: nodes sharing one runtime_resources/ folder delete each
            # other's cached pip environments (a replacement node's agent removed the one the head still used)
            node_dir = self.temp_dir / f"node{node.index}"
            node_dir.mkdir(exist_ok=True)
            args += [f"--address={self.gcs_address}", f"--temp-dir={node_dir}"]
        log = open(self.log_dir / f"node{node.index}.log", "w")  # noqa: SIM115 - closed with the process
        # a new session: every daemon this `ray start` spawns shares its process group, which stop() kills
        proc = subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=self.temp_dir)
        node.pgid = proc.pid
        self.started.append(node)
        try:
            rc = proc.wait(timeout=START_TIMEOUT_S)
        finally:
            log.close()
        if rc != 0:
            raise RuntimeError(f"ray start (node {node.index}) exited {rc}:\n{self.start_log(node.index)}")
        return node

    def start_log(self, index: int) -> str:
        return (self.log_dir / f"node{index}.log").read_text()[-4000:]

    def start(self) -> RayCluster:
        try:
            self._start_node(head=True)
            for _ in range(self.nodes - 1):
                self._start_node(head=False)
            self.wait_for_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker_node(self) -> RayNode:
        """Start one more worker node (e.g. to replace a lost one)."""
        return self._start_node(head=False)

    def alive_nodes(self) -> list[dict]:
        """``ray.util.state.list_nodes`` of this cluster (through its dashboard), alive ones only."""
        from ray.util.state import list_nodes

        return [n.__dict__ if hasattr(n, "__dict__") else dict(n)
                for n in list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], timeout=10,
                                    # Ray 2.60 reports a filtered-out DEAD node as "truncated" output and raises
                                    raise_on_missing_output=False)]

    def wait_for_nodes(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if len(self.alive_nodes()) >= count:
                    return
            except Exception as err:  # noqa: BLE001 - the dashboard takes a few seconds to come up
                last = err
            time.sleep(2)
        raise TimeoutError(f"the Ray cluster at {self.gcs_address} did not show {count} alive nodes in {timeout}s: {last}")

    # ---------------------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every live process of this cluster: its nodes' process groups, anything naming its temp dir, and
        anything with its mark in the environment (workers and job drivers run in sessions of their own)."""
        pids = set(pids_with_arg(str(self.temp_dir)))
        pids.update(pids_with_arg(f"{CLUSTER_MARK}={self.temp_dir}\0", where="environ"))
        for node in self.started:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if os.getpgid(int(entry.name)) == node.pgid:
                            pids.add(int(entry.name))
                    except OSError:
                        continue
        pids.discard(os.getpid())
        return sorted(pids)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the nodes' process groups, then SIGKILL what is left of them and of anything whose
        arguments hold this cluster's temp dir; remove the temp dir."""
        for node in self.started:
            try:
                os.killpg(node.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        for node in self.started:
            try:
                os.killpg(node.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with RayCluster(nodes=int(sys.argv[1]) if len(sys.argv) > 1 else 2) as cluster:
        print(f"RAY_ADDRESS={cluster.dashboard_url} (GCS {cluster.gcs_address}, temp dir {cluster.temp_dir})", flush=True)
        print(f"nodes: {len(cluster.alive_nodes())}; press Enter to stop", flush=True)
        sys.stdin.readline()
