"""fspo_verl.cli.lost_nodes: which failures count as a lost node, and the note's wording. The real case (a worker
node's raylet SIGKILLed mid-run on a 2-node cluster) is tests/cluster/test_ray_job.py."""

from __future__ import annotations

import time

import pytest
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    NodeDiedError,
    RayTaskError,
)

from fspo_verl.cli import lost_nodes
from fspo_verl.cli.lost_nodes import looks_like_node_loss, lost_nodes_note


def test_rays_actor_and_node_errors_count_as_node_loss():
    assert looks_like_node_loss(ActorDiedError())
    assert looks_like_node_loss(ActorUnavailableError("Socket closed", b"\x00" * 16))
    assert looks_like_node_loss(NodeDiedError("node gone"))


def test_a_wrapped_node_loss_counts_too():
    try:
        try:
            raise ActorDiedError()
        except ActorDiedError as inner:
            raise RuntimeError("trainer step failed") from inner
    except RuntimeError as outer:
        assert looks_like_node_loss(outer)
    task_error = RayTaskError("TaskRunnerV1.run", "traceback", ActorDiedError())
    assert looks_like_node_loss(task_error)


def test_a_surviving_ranks_collective_error_counts_by_its_text():
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4242")
    assert looks_like_node_loss(RayTaskError("WorkerDict.update_actor", "tb", gloo))


@pytest.mark.parametrize("err", [ValueError("bad lr"), KeyError("x"), RayTaskError("f", "tb", ZeroDivisionError())])
def test_other_errors_are_not_node_loss_and_do_not_wait(err, monkeypatch):
    waits = []
    monkeypatch.setattr(lost_nodes, "dead_nodes_since", lambda start_ms, wait_s: waits.append(wait_s) or [])
    assert not looks_like_node_loss(err)
    assert lost_nodes_note(err, start_ms=0) is None
    assert waits == [0.0]  # one look, no waiting


def test_the_note_names_each_dead_node_and_the_way_back(monkeypatch):
    dead = [{"node_id": "c4f8", "node_ip": "10.0.0.7", "message": "health check failed"}]
    monkeypatch.setattr(lost_nodes, "dead_nodes_since", lambda start_ms, wait_s: dead)
    note = lost_nodes_note(ActorDiedError(), start_ms=int(time.time() * 1000))
    assert note == ("lost Ray node c4f8 (10.0.0.7): health check failed. Fix: bring the node back (or replace it), "
                    "then submit the same command again: it resumes from the last checkpoint in trainer.default_local_dir")


def test_no_dead_node_means_no_note(monkeypatch):
    monkeypatch.setattr(lost_nodes, "dead_nodes_since", lambda start_ms, wait_s: [])
    assert lost_nodes_note(ActorDiedError(), start_ms=0) is None


def test_without_ray_there_is_nothing_to_ask():
    import ray

    assert not ray.is_initialized()
    assert lost_nodes.dead_nodes_since(0, wait_s=5) == []


def test_the_driver_asks_for_lost_nodes_while_rays_session_is_still_open(tmp_path, monkeypatch):
    """``fspo-verl train``'s job asks the GCS which nodes died before its job environment ends Ray's session
    (asked after it, every lookup found no Ray and the note was lost; tests/cluster/test_ray_job.py failed so)."""
    import contextlib

    from omegaconf import OmegaConf

    from fspo_verl.cli import app

    inside, asked = [False], []

    @contextlib.contextmanager
    def environment():
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

    def train(config, files):
        raise ActorDiedError()

    def note(err, start_ms):
        asked.append(inside[0])
        return "lost Ray node c4f8 (10.0.0.7): health check failed"

    monkeypatch.setattr(app, "job_findings", lambda config: app.Findings())
    monkeypatch.setattr(app, "_job_environment", environment)
    monkeypatch.setattr(app, "_train", train)
    monkeypatch.setattr(app, "lost_nodes_note", note)
    config = OmegaConf.create({"trainer": {"resume_mode": "disable", "default_local_dir": str(tmp_path / "ckpt")}})
    outcome = app._checked_job(config, tmp_path, tmp_path / "ckpt")
    assert asked == [True]
    assert outcome["status"] == "failed" and outcome["error"].startswith("lost Ray node c4f8 (10.0.0.7)")
