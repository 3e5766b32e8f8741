"""Name the Ray nodes a failed run lost, in the driver's one-line error.

When a node dies mid-run (its raylet killed, the machine gone), verl's driver sees only the symptom of an
actor on it, e.g. ``ActorUnavailableError: The actor 9783... is unavailable: ... RpcError: Socket closed``,
which names no node; the GCS marks the node DEAD some seconds later, after its health checks fail. So when a
run fails with one of Ray's actor, worker or node errors (or a lost peer's text, :data:`PEER_LOSS_TEXT`),
:func:`lost_nodes_note` waits (at most :data:`WAIT_S`) for nodes that died since the run began and returns a
sentence naming them, which ``fspo-verl train`` puts in front of the error. Any other error on a multi-node
cluster looks once without waiting; with no Ray, or a one-node Ray, nothing is asked.
"""

from __future__ import annotations

import re
import time

#: Ray exceptions that a lost node shows up as, in the driver (matched by class name through the cause chain)
NODE_LOSS_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError",
                    "WorkerCrashedError", "OwnerDiedError", "ObjectLostError", "ObjectFetchTimedOutError")
#: our choice: Ray marks a silent node dead after health_check_failure_threshold (5) x period (3 s) by
#: default, plus the report; 45 s covers that and keeps a failure well inside a 120 s bound
WAIT_S = 45.0
POLL_S = 1.0
#: how a lost peer shows up in a surviving rank's collective or RPC error, whatever class carries it (a gloo
#: all-reduce whose peer vanished raises RuntimeError, which can reach the driver before the actor death)
PEER_LOSS_TEXT = re.compile(r"Connection (closed|reset) by peer|Socket closed|Broken pipe|ECONNRESET|"
                            r"connection error code|node has died|NodeDiedError|unexpectedly exits", re.IGNORECASE)


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        cause = getattr(err, "cause", None)  # RayTaskError keeps the remote exception here
        err = cause if isinstance(cause, BaseException) else (err.__cause__ or err.__context__)


def looks_like_node_loss(err: BaseException) -> bool:
    """True when ``err`` (or what caused it) is one of :data:`NODE_LOSS_ERRORS`, or its text reads like a lost
    peer (:data:`PEER_LOSS_TEXT`)."""
    for e in _chain(err):
        if any(cls.__name__ in NODE_LOSS_ERRORS for cls in type(e).__mro__) or PEER_LOSS_TEXT.search(str(e)):
            return True
    return False


def dead_nodes_since(start_ms: int, wait_s: float = WAIT_S, poll_s: float = POLL_S) -> list[dict]:
    """Nodes of the connected Ray cluster that died at or after ``start_ms`` (epoch ms), waiting at most
    ``wait_s`` for the GCS to mark one; [] when none did, or when no Ray is connected."""
    import ray

    if not ray.is_initialized():
        return []
    from ray.util.state import list_nodes

    try:
        if len(ray.nodes()) <= 1:
            return []  # one node: the driver's own; had it died, this process would not be asking
    except Exception:  # noqa: BLE001 - the GCS itself is gone: nothing to ask
        return []
    deadline = time.monotonic() + wait_s
    while True:
        try:
            nodes = list_nodes(filters=[("state", "=", "DEAD")], detail=True, raise_on_missing_output=False, timeout=10)
        except Exception:  # noqa: BLE001 - the state API is a courtesy here; the run's error stands
            nodes = []
        dead = [
            {"node_id": n.node_id, "node_ip": n.node_ip, "message": (n.state_message or "").strip()}
            for n in nodes
            if (n.end_time_ms or 0) >= start_ms
        ]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(poll_s)


def lost_nodes_note(err: BaseException, start_ms: int, wait_s: float = WAIT_S) -> str | None:
    """``"lost Ray node <id> (<ip>): <Ray's reason>; ..."`` for a run that failed because nodes died, else None.

    Errors that look like a lost node wait up to ``wait_s`` for the GCS; any other error looks once, without
    waiting, so a failure elsewhere is not held up but a node already known dead is still named."""
    dead = dead_nodes_since(start_ms, wait_s=wait_s if looks_like_node_loss(err) else 0.0)
    if not dead:
        return None
    parts = [f"{d['node_id']} ({d['node_ip']})" + (f": {d['message']}" if d["message"] else "") for d in dead]
    return (f"lost Ray node{'s' if len(dead) > 1 else ''} {'; '.join(parts)}. Fix: bring the node back (or "
            "replace it), then submit the same command again: it resumes from the last checkpoint in "
            "trainer.default_local_dir")
