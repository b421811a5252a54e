"""Heartbeats in group commits (``_heartbeats``), on SQLite and PostgreSQL: a heartbeat that repeats
the last one only moves the node's last-seen time, and only while nothing changed since; many
heartbeats share a transaction, and one that fails fails alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import select

from kit.controller import Api, Node, make_controller, running_reports
from ukedge.controller import Controller, ReplicaState
from ukedge.controller._db import nodes, replicas
from ukedge.controller._heartbeats import HeartbeatWriter
from ukedge.controller._reconcile import mark_not_ready
from ukedge.errors import ControllerError
from ukedge.host.link import Heartbeat, HeartbeatReply, InstanceReport, NodeResources

IMAGE = "127.0.0.1:1/app@sha256:" + "d" * 64  # pinned; its registry is never reached


class GatedClock:
    """The writer's clock: the first reading waits until the test opens the gate, so that
    everything put meanwhile is queued behind the first transaction."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.gate = threading.Event()
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        if self.readings == 1:
            assert self.gate.wait(60), "the test never opened the gate"
        return self.now


def _beat(node: Node, *, memory: int = 0, **fields: object) -> Heartbeat:
    return Heartbeat.model_validate(
        {
            "name": node.name,
            "architecture": "amd64",
            "accelerator": "tcg",
            "capacity": NodeResources(memory_mib=4096, vcpus=8),
            "allocated": NodeResources(memory_mib=memory, vcpus=0),
            "applied_generation": node.applied,
            **fields,
        }
    )


def _row(controller: Controller, node: Node) -> dict[str, object]:
    with controller.db.read() as connection:
        row = connection.execute(select(nodes).where(nodes.c.id == node.id)).one()
    return dict(row._mapping)


def _settle(node: Node) -> None:
    """One heartbeat through the API so the node has applied its current generation."""
    node.beat()
    node.beat()


def test_a_repeated_heartbeat_only_moves_last_seen(api: Api, controller: Controller) -> None:
    node = api.enrol("n1")
    _settle(node)
    writer = controller.heartbeats
    recorded, touched = writer.recorded, writer.touched
    controller.clock = lambda: 5_000_000_000.0
    reply = writer.put(node.id, node.reply.credential, _beat(node, memory=100)).result(30)
    assert reply.desired is None
    assert (writer.recorded, writer.touched) == (recorded + 1, touched)  # new content: in full
    controller.clock = lambda: 5_000_000_002.0
    writer.put(node.id, node.reply.credential, _beat(node, memory=100)).result(30)
    assert (writer.recorded, writer.touched) == (recorded + 1, touched + 1)
    row = _row(controller, node)
    assert row["last_heartbeat"] == 5_000_000_002.0
    assert row["allocated_memory_mib"] == 100
    # Other content is recorded in full again.
    controller.clock = lambda: 5_000_000_004.0
    writer.put(node.id, node.reply.credential, _beat(node, memory=200)).result(30)
    assert writer.recorded == recorded + 2
    assert _row(controller, node)["allocated_memory_mib"] == 200


def test_a_wrong_credential_is_refused_even_for_a_repeated_heartbeat(api: Api) -> None:
    node = api.enrol("n1")
    _settle(node)
    writer = api.controller.heartbeats
    writer.put(node.id, node.reply.credential, _beat(node)).result(30)
    with pytest.raises(ControllerError) as refused:
        writer.put(node.id, "not-its-credential", _beat(node)).result(30)
    assert refused.value.status == 401


def _running(node: Node, reply: HeartbeatReply) -> list[InstanceReport]:
    """The node applies the desired state of ``reply`` and reports it all running."""
    assert reply.desired is not None
    node.applied = reply.desired.generation
    return running_reports(reply.desired.instances)


def test_a_repeated_heartbeat_after_not_ready_or_new_desired_state_is_recorded_in_full(
    api: Api, controller: Controller
) -> None:
    """The cheap path never hides what the full one would write: a node marked NotReady (its
    replicas lost) is Ready again with its replicas running, and a node whose desired state
    changed gets it, though their heartbeats repeat the last one."""
    node = api.enrol("n1")
    _settle(node)
    r = api.admin.post(
        "/v1/deployments", json={"name": "app", "image": IMAGE, "memory_mib": 64, "replicas": 2}
    )
    assert r.status_code in (200, 201), r.text
    loop = controller.make_loop()
    try:
        assert loop.run_once()
    finally:
        loop.leadership.release()
    writer = controller.heartbeats
    reports = _running(node, writer.put(node.id, node.reply.credential, _beat(node)).result(30))
    beat = _beat(node, instances=reports, memory=128)
    writer.put(node.id, node.reply.credential, beat).result(30)
    touched = writer.touched
    writer.put(node.id, node.reply.credential, beat).result(30)
    assert writer.touched == touched + 1
    with controller.db.read() as connection:
        states = connection.execute(select(replicas.c.state)).scalars().all()
    assert states == [ReplicaState.RUNNING.value] * 2

    with controller.db.write() as connection:
        assert mark_not_ready(connection, now=controller.now() + 3600, after_s=1) == ["n1"]
    reply = writer.put(node.id, node.reply.credential, beat).result(30)
    assert reply.desired is None
    assert writer.touched == touched + 1  # recorded in full
    assert _row(controller, node)["ready"] is True
    with controller.db.read() as connection:
        states = connection.execute(select(replicas.c.state)).scalars().all()
    assert states == [ReplicaState.RUNNING.value] * 2

    r = api.admin.post("/v1/deployments/app/scale", json={"replicas": 3})
    assert r.status_code == 200, r.text
    loop = controller.make_loop()
    try:
        assert loop.run_once()
    finally:
        loop.leadership.release()
    reply = writer.put(node.id, node.reply.credential, beat).result(30)
    assert reply.desired is not None
    assert len(reply.desired.instances) == 3
    assert writer.touched == touched + 1


def test_two_controller_processes_never_keep_a_stale_report(
    tmp_path: Path, db_url: str, controller: Controller, api: Api
) -> None:
    """Each process knows only the heartbeats it recorded: when another process recorded
    different content meanwhile, a repeat of this process's last one is recorded in full."""
    if db_url.startswith("sqlite"):
        pytest.skip("several controller processes share PostgreSQL only")
    other = make_controller(tmp_path / "other", db_url)
    try:
        node = api.enrol("n1")
        _settle(node)
        mine, theirs = controller.heartbeats, other.heartbeats
        mine.put(node.id, node.reply.credential, _beat(node, memory=100)).result(30)
        theirs.put(node.id, node.reply.credential, _beat(node, memory=200)).result(30)
        assert _row(controller, node)["allocated_memory_mib"] == 200
        touched = mine.touched
        mine.put(node.id, node.reply.credential, _beat(node, memory=100)).result(30)
        assert mine.touched == touched
        assert _row(controller, node)["allocated_memory_mib"] == 100
    finally:
        other.close()


@pytest.fixture
def gated(controller: Controller) -> Iterator[tuple[HeartbeatWriter, GatedClock]]:
    clock = GatedClock(controller.now())
    writer = HeartbeatWriter(controller.db, clock=clock, interval=5.0, writers=1)
    yield writer, clock
    clock.gate.set()
    writer.close()


def test_heartbeats_queued_together_share_a_transaction(
    api: Api, gated: tuple[HeartbeatWriter, GatedClock]
) -> None:
    writer, clock = gated
    token = api.token(uses=20)
    fleet = [api.enrol(f"n{i:02d}", token) for i in range(20)]
    futures = [writer.put(n.id, n.reply.credential, _beat(n)) for n in fleet]
    clock.gate.set()
    replies = [f.result(60) for f in futures]
    assert all(r.desired is not None for r in replies)  # new nodes: their desired state
    # The first may have been taken alone before the rest were queued; the rest went in one.
    assert clock.readings <= 2
    assert writer.recorded == 20
    for node in fleet:
        assert _row(api.controller, node)["last_heartbeat"] == clock.now


def test_a_failing_heartbeat_fails_alone(
    api: Api, gated: tuple[HeartbeatWriter, GatedClock], db_url: str
) -> None:
    """A wrong credential is refused in the batch; a value the database refuses (PostgreSQL: a
    NUL character) rolls the batch back, which is written again one heartbeat at a time."""
    writer, clock = gated
    token = api.token(uses=4)
    good = [api.enrol(f"good{i}", token) for i in range(3)]
    bad = api.enrol("bad", token)
    futures: list[Future[HeartbeatReply]] = [writer.put(good[0].id, "wrong", _beat(good[0]))]
    futures += [writer.put(n.id, n.reply.credential, _beat(n)) for n in good]
    arch = "amd\x0064" if db_url.startswith("postgresql") else "amd64"
    futures.append(writer.put(bad.id, bad.reply.credential, _beat(bad, architecture=arch)))
    clock.gate.set()
    with pytest.raises(ControllerError) as refused:
        futures[0].result(60)
    assert refused.value.status == 401
    for future in futures[1:4]:
        assert future.result(60).desired is not None
    for node in good:
        assert _row(api.controller, node)["last_heartbeat"] == clock.now
    if db_url.startswith("postgresql"):
        with pytest.raises(Exception, match=r"0x00|NUL"):
            futures[4].result(60)
    else:
        assert futures[4].result(60).desired is not None


def test_close_fails_what_is_queued_and_refuses_more(
    api: Api, gated: tuple[HeartbeatWriter, GatedClock]
) -> None:
    writer, clock = gated
    node = api.enrol("n1")
    first = writer.put(node.id, node.reply.credential, _beat(node))
    threading.Timer(0.5, clock.gate.set).start()
    writer.close()
    assert first.result(60).desired is not None  # the batch under way finished
    with pytest.raises(ControllerError, match="shutting down"):
        writer.put(node.id, node.reply.credential, _beat(node))
