"""A controller-driven move relayed through heartbeats (``_movestore``), on SQLite and
PostgreSQL: the target is asked for an offer, the source is ordered to move with it, and the
replica changes node only when the source reports the move done; never listed by both."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, update

from kit.controller import Api, Node, api_for, make_controller, running_reports
from ukedge.controller import Controller
from ukedge.controller._db import moves, nodes, replicas
from ukedge.controller._moves import Move, MoveState, start
from ukedge.controller._movestore import active_moves, save_move
from ukedge.controller._nodes import bump_generations
from ukedge.host import PortMapping
from ukedge.host.link import HeartbeatReply, InstanceReport, MoveOffer, MoveReport

IMAGE = "127.0.0.1:1/app@sha256:" + "d" * 64  # pinned; its registry is never reached
OFFER = {
    "node": "b",
    "host": "10.0.0.2",
    "port": 7611,
    "cert_pem": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    "fingerprint": "a" * 64,
    "ticket": "t" * 32,
}


def _pass(controller: Controller) -> None:
    loop = controller.make_loop()
    try:
        assert loop.run_once()
    finally:
        loop.leadership.release()


def _one_replica_on(api: Api, controller: Controller, node: Node) -> tuple[str, str]:
    r = api.admin.post(
        "/v1/deployments", json={"name": "app", "image": IMAGE, "memory_mib": 64, "replicas": 1}
    )
    assert r.status_code in (200, 201), r.text
    _pass(controller)
    with controller.db.read() as connection:
        row = connection.execute(select(replicas)).one()
    assert row.node_id == node.id
    return row.deployment, row.replica


def _start_move(controller: Controller, a: Node, b: Node, replica: str) -> str:
    move = start(
        "m1",
        deployment="app",
        replica=replica,
        instance=f"app-{replica}",
        source=a.id,
        target=b.id,
        mode="snapshot",
        now=controller.now(),
    )
    with controller.db.write() as connection:
        save_move(connection, move)
        bump_generations(connection, {a.id, b.id})
    return move.id


def _listed(reply: HeartbeatReply) -> list[str]:
    assert reply.desired is not None
    return [i.replica for i in reply.desired.instances]


def _node_of(controller: Controller, replica: str) -> str | None:
    with controller.db.read() as connection:
        return connection.execute(
            select(replicas.c.node_id).where(replicas.c.replica == replica)
        ).scalar_one()


def _running(reply: HeartbeatReply) -> list[InstanceReport]:
    assert reply.desired is not None
    return running_reports(reply.desired.instances)


def _replicas(controller: Controller) -> list[tuple[str, str | None]]:
    with controller.db.read() as connection:
        rows = connection.execute(select(replicas.c.replica, replicas.c.node_id)).all()
    return sorted((row.replica, row.node_id) for row in rows)


def _active(controller: Controller) -> list[Move]:
    with controller.db.read() as connection:
        return active_moves(connection)


@pytest.fixture
def a(api: Api) -> Node:
    """The source: enrolled, taking part in moves."""
    node = api.enrol("a")
    node.beat(migration_host="10.0.0.1")
    return node


@pytest.fixture
def replica(api: Api, controller: Controller, a: Node) -> str:
    """The one replica of ``app``, placed on ``a`` (the only node yet)."""
    _, placed = _one_replica_on(api, controller, a)
    return placed


@pytest.fixture
def b(api: Api, replica: str) -> Node:
    """The target: enrolled once the replica is on ``a``, no heartbeat sent yet."""
    return api.enrol("b")


@pytest.fixture
def reports(a: Node, b: Node, replica: str) -> list[InstanceReport]:
    """``b`` takes part in moves and ``a`` reports the replica running: what ``a`` reports."""
    b.beat(migration_host="10.0.0.2")
    running = _running(a.beat(migration_host="10.0.0.1"))
    a.beat(running, migration_host="10.0.0.1")
    return running


def test_a_move_relayed_through_heartbeats(
    controller: Controller, a: Node, b: Node, replica: str
) -> None:
    b.beat(migration_host="10.0.0.2")
    move = _start_move(controller, a, b, replica)

    reply = b.beat(migration_host="10.0.0.2")
    assert reply.offer_requests == [move] and reply.moves == []
    assert _listed(reply) == []  # the target does not run it yet
    again = b.beat(migration_host="10.0.0.2")  # repeated: never the cheap path while in flight
    assert again.offer_requests == [move]
    reply = a.beat(migration_host="10.0.0.1")
    assert reply.moves == [] and reply.offer_requests == []

    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move, offer=OFFER)])
    reply = a.beat(migration_host="10.0.0.1")
    (order,) = reply.moves
    assert (order.move, order.instance, order.offer) == (move, f"app-{replica}", OFFER)
    running = MoveReport(move=move, state="running", step="transfer")
    assert a.beat(migration_host="10.0.0.1", move_reports=[running]).moves == [order]
    assert a.beat(migration_host="10.0.0.1", move_reports=[running]).moves == [order]
    assert _node_of(controller, replica) == a.id

    done = MoveReport(move=move, state="done", step="done")
    reply = a.beat(migration_host="10.0.0.1", move_reports=[done])
    assert _listed(reply) == [] and reply.moves == []
    assert _node_of(controller, replica) == b.id
    assert _listed(b.beat(migration_host="10.0.0.2")) == [replica]
    with controller.db.read() as connection:
        row = connection.execute(select(moves)).one()
        assert active_moves(connection) == []
    assert (row.state, row.offer) == (MoveState.DONE.value, None)  # the ticket is not kept


def test_a_malformed_offer_or_a_failed_move_leaves_the_replica_on_the_source(
    controller: Controller, a: Node, b: Node, replica: str
) -> None:
    move = _start_move(controller, a, b, replica)
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move, offer={"port": 0})])
    with controller.db.read() as connection:
        row = connection.execute(select(moves)).one()
    assert row.state == MoveState.FAILED.value and "malformed" in row.error
    assert a.beat(migration_host="10.0.0.1").moves == []
    assert _node_of(controller, replica) == a.id

    with controller.db.write() as connection:
        connection.execute(moves.delete())
    move = _start_move(controller, a, b, replica)
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move, offer=OFFER)])
    failed = MoveReport(move=move, state="failed", step="transfer", error="channel broke")
    reply = a.beat(migration_host="10.0.0.1", move_reports=[failed])
    assert reply.moves == []
    assert _node_of(controller, replica) == a.id
    with controller.db.read() as connection:
        row = connection.execute(select(moves)).one()
    assert (row.state, row.error, row.offer) == (MoveState.FAILED.value, "channel broke", None)


def test_a_node_without_a_migration_host_is_never_asked(api: Api, controller: Controller) -> None:
    """An agent that does not report where it takes moves (an older one) gets no move fields,
    which its wire models would refuse."""
    a = api.enrol("a")
    a.beat()
    _, replica = _one_replica_on(api, controller, a)
    b = api.enrol("b")
    move = _start_move(controller, a, b, replica)
    reply = b.beat()
    assert reply.offer_requests == [] and reply.moves == []
    assert [m.id for m in _active(controller)] == [move]


def test_a_node_drained_with_migrate_moves_its_replica_then_falls_back_after_failures(
    controller: Controller, a: Node, b: Node, replica: str, reports: list[InstanceReport]
) -> None:
    """The reconciler starts a move instead of a replacement; each failed try is followed by
    another until the last, after which the replica is replaced (make-before-break)."""
    with controller.db.write() as connection:
        connection.execute(
            update(nodes).where(nodes.c.id == a.id).values(draining=True, drain_migrate="live")
        )

    for attempt in (1, 2):
        _pass(controller)
        assert _replicas(controller) == [(replica, a.id)]  # moved, not replaced
        (move,) = _active(controller)
        assert (move.source, move.target, move.mode, move.attempt) == (a.id, b.id, "live", attempt)
        _pass(controller)  # a move under way is left alone
        assert _active(controller) == [move]
        assert b.beat(migration_host="10.0.0.2").offer_requests == [move.id]
        b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move.id, error="no room")])
        a.beat(reports, migration_host="10.0.0.1")

    _pass(controller)  # both tries failed: replaced on b, the original runs on until then
    assert _active(controller) == []
    placed = _replicas(controller)
    assert (replica, a.id) in placed and len(placed) == 2
    assert [node for name, node in placed if name != replica] == [b.id]


def test_a_replica_moved_off_a_draining_node_stays_on_its_target(
    controller: Controller, a: Node, b: Node, replica: str, reports: list[InstanceReport]
) -> None:
    with controller.db.write() as connection:
        connection.execute(
            update(nodes).where(nodes.c.id == a.id).values(draining=True, drain_migrate="snapshot")
        )
    _pass(controller)
    (move,) = _active(controller)
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move.id, offer=OFFER)])
    (order,) = a.beat(reports, migration_host="10.0.0.1").moves
    assert order.mode == "snapshot"
    done = MoveReport(move=move.id, state="done", step="done")
    assert _listed(a.beat(migration_host="10.0.0.1", move_reports=[done])) == []
    assert _listed(b.beat(migration_host="10.0.0.2")) == [replica]
    _pass(controller)
    _pass(controller)
    assert _replicas(controller) == [(replica, b.id)]  # no second move, no replacement
    assert _active(controller) == []


def test_a_move_changed_meanwhile_is_not_overwritten(
    controller: Controller, a: Node, b: Node, replica: str
) -> None:
    """Two heartbeats advancing one move at once (PostgreSQL, two controller processes): the
    write made from a stale read matches no row and changes nothing."""
    move_id = _start_move(controller, a, b, replica)
    (stale,) = _active(controller)
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move_id, offer=OFFER)])
    failed = replace(
        stale, state=MoveState.FAILED, error="expired", updated_at=stale.updated_at + 1
    )
    with controller.db.write() as connection:
        assert not save_move(connection, failed, previous=stale)
        (current,) = active_moves(connection)
    assert current.state == MoveState.MOVING


def _drain(api: Api, node: str, migrate: str | None = None) -> dict[str, object]:
    params = {"migrate": migrate} if migrate else {}
    r = api.admin.post(f"/v1/nodes/{node}/drain", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_drain_with_migrate_is_shown_and_uncordon_clears_it(
    api: Api, controller: Controller, a: Node
) -> None:
    record = _drain(api, "a", "live")
    assert (record["draining"], record["drain_migrate"]) == (True, "live")
    assert record["migration_host"] == "10.0.0.1"
    refused = api.admin.post("/v1/nodes/a/drain", params={"migrate": "cold"})
    assert refused.status_code == 422 and "migrate" in refused.text
    r = api.admin.post("/v1/nodes/a/uncordon")
    assert (r.json()["draining"], r.json()["drain_migrate"]) == (False, None)
    with controller.db.read() as connection:
        assert connection.execute(select(nodes.c.drain_migrate)).scalar_one() is None
    assert _drain(api, "a")["drain_migrate"] is None  # a plain drain replaces


def test_a_drain_that_asks_for_postcopy_orders_postcopy_moves(
    api: Api, controller: Controller, a: Node, b: Node, replica: str, reports: list[InstanceReport]
) -> None:
    for migrate in (None, "snapshot"):
        params = {"postcopy": "true", **({"migrate": migrate} if migrate else {})}
        refused = api.admin.post("/v1/nodes/a/drain", params=params)
        assert refused.status_code == 422 and "postcopy is for migrate=live" in refused.text
    r = api.admin.post("/v1/nodes/a/drain", params={"migrate": "live", "postcopy": "true"})
    assert r.status_code == 200, r.text
    assert (r.json()["drain_migrate"], r.json()["drain_postcopy"]) == ("live", True)
    _pass(controller)
    (move,) = _active(controller)
    assert (move.mode, move.postcopy) == ("live", True)
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move.id, offer=OFFER)])
    (order,) = a.beat(reports, migration_host="10.0.0.1").moves
    assert order.instance == f"app-{replica}"
    assert (order.mode, order.postcopy) == ("live", True)
    r = api.admin.post("/v1/nodes/a/uncordon")
    assert (r.json()["drain_migrate"], r.json()["drain_postcopy"]) == (None, False)


def test_tries_are_counted_per_drain(
    api: Api, controller: Controller, a: Node, b: Node, replica: str, reports: list[InstanceReport]
) -> None:
    """Two failed tries, then the drain is ended and begun again: the new drain moves the
    replica (try 1) instead of falling back to a replacement at once."""
    _drain(api, "a", "snapshot")
    for _ in (1, 2):
        _pass(controller)
        (move,) = _active(controller)
        b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move.id, error="no room")])
        a.beat(reports, migration_host="10.0.0.1")
    api.admin.post("/v1/nodes/a/uncordon")
    time.sleep(0.01)  # the new drain begins after the earlier tries (wall-clock stamps)
    _drain(api, "a", "snapshot")
    _pass(controller)
    (move,) = _active(controller)
    assert move.attempt == 1
    assert _replicas(controller) == [(replica, a.id)]  # moving, not replaced


def test_a_move_started_by_the_api(api: Api, a: Node, b: Node, replica: str) -> None:
    """``ukedge migrate INSTANCE --to NODE``: refused, naming why, unless it can go; then
    relayed as any move; the replica's record shows its new node and ports."""
    b.beat()  # no migration host yet
    instance = f"app-{replica}"
    body = {"instance": instance, "to": "b", "mode": "live"}
    r = api.admin.post("/v1/moves", json=body)
    assert r.status_code == 409 and "only a running replica moves" in r.text
    reports = _running(a.beat(migration_host="10.0.0.1"))
    a.beat(reports, migration_host="10.0.0.1")
    r = api.admin.post("/v1/moves", json=body)
    assert r.status_code == 409 and "node b takes no part in moves" in r.text
    b.beat(migration_host="10.0.0.2")
    for wrong, status, words in [
        ({**body, "instance": "app-nope"}, 404, "no replica whose instance is 'app-nope'"),
        ({**body, "to": "c"}, 404, "no node 'c'"),
        ({**body, "to": "a"}, 409, "runs on node a already"),
        ({**body, "mode": "cold"}, 422, "mode"),
        ({**body, "mode": "snapshot", "postcopy": True}, 422, "postcopy is for live moves"),
    ]:
        r = api.admin.post("/v1/moves", json=wrong)
        assert r.status_code == status and words in r.text, r.text
    r = api.admin.post("/v1/moves", json=body)
    assert r.status_code == 201, r.text
    started = r.json()
    assert (started["state"], started["source_name"], started["target_name"]) == (
        "offer",
        "a",
        "b",
    )
    assert "offer" not in started or not isinstance(started.get("offer"), dict)
    assert api.admin.post("/v1/moves", json=body).status_code == 409  # moving already
    assert [m["id"] for m in api.admin.get("/v1/moves", params={"active": True}).json()] == [
        started["id"]
    ]
    assert b.beat(migration_host="10.0.0.2").offer_requests == [started["id"]]
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=started["id"], offer=OFFER)])
    (order,) = a.beat(reports, migration_host="10.0.0.1").moves
    assert (order.instance, order.mode, order.postcopy) == (instance, "live", False)
    done = MoveReport(move=started["id"], state="done", step="done")
    a.beat(migration_host="10.0.0.1", move_reports=[done])
    moved = _running(b.beat(migration_host="10.0.0.2"))
    port = {"host_ip": "127.0.0.1", "host_port": 18081, "guest_port": 8080, "protocol": "tcp"}
    mapping = PortMapping.model_validate(port)
    b.beat([m.model_copy(update={"ports": [mapping]}) for m in moved], migration_host="10.0.0.2")
    ended = api.admin.get(f"/v1/moves/{started['id']}").json()
    assert (ended["state"], ended["step"]) == ("done", "done")
    [record] = api.admin.get("/v1/replicas").json()
    assert (record["node_name"], record["ports"]) == ("b", [port])
    assert api.admin.get("/v1/moves", params={"active": True}).json() == []
    assert api.admin.get("/v1/moves/nope").status_code == 404


def test_a_move_started_by_the_api_with_postcopy_orders_it(
    api: Api, a: Node, b: Node, replica: str, reports: list[InstanceReport]
) -> None:
    body = {"instance": f"app-{replica}", "to": "b", "mode": "live", "postcopy": True}
    r = api.admin.post("/v1/moves", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["postcopy"] is True
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=r.json()["id"], offer=OFFER)])
    (order,) = a.beat(reports, migration_host="10.0.0.1").moves
    assert (order.mode, order.postcopy) == ("live", True)


@pytest.fixture
def api_move(api: Api, replica: str, reports: list[InstanceReport]) -> str:
    """A move of the running replica to ``b`` started through the API: its id."""
    r = api.admin.post("/v1/moves", json={"instance": f"app-{replica}", "to": "b"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_cancelling_a_move_waiting_for_its_offer_ends_it(
    api: Api, a: Node, b: Node, reports: list[InstanceReport], api_move: str
) -> None:
    r = api.admin.delete(f"/v1/moves/{api_move}")
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["state"] == "failed" and "cancelled" in cancelled["error"]
    assert cancelled["cancelled_at"] is not None
    assert b.beat(migration_host="10.0.0.2").offer_requests == []
    reply = a.beat(reports, migration_host="10.0.0.1")
    assert reply.moves == [] and reply.cancels == []
    r = api.admin.delete(f"/v1/moves/{api_move}")
    assert r.status_code == 409 and "has ended" in r.text
    assert api.admin.delete("/v1/moves/nope").status_code == 404


def test_a_moving_move_is_cancelled_by_its_source(
    api: Api, a: Node, b: Node, reports: list[InstanceReport], api_move: str
) -> None:
    """The source is told to cancel in its heartbeat replies (the order stands, so it is never
    started anew) until it reports how the move ended; the replica stays on the source."""
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=api_move, offer=OFFER)])
    (order,) = a.beat(reports, migration_host="10.0.0.1").moves
    assert a.beat(reports, migration_host="10.0.0.1").cancels == []

    r = api.admin.delete(f"/v1/moves/{api_move}")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["cancelled_at"] is not None) == ("moving", True)
    assert api.admin.delete(f"/v1/moves/{api_move}").status_code == 200  # asked again: no change
    running = MoveReport(move=api_move, state="running", step="transfer")
    reply = a.beat(reports, migration_host="10.0.0.1", move_reports=[running])
    assert (reply.moves, reply.cancels) == ([order], [api_move])
    assert b.beat(migration_host="10.0.0.2").cancels == []  # only the source drives it

    failed = MoveReport(
        move=api_move, state="failed", step="transfer", error="cancelled at transfer"
    )
    reply = a.beat(reports, migration_host="10.0.0.1", move_reports=[failed])
    assert (reply.moves, reply.cancels) == ([], [])
    ended = api.admin.get(f"/v1/moves/{api_move}").json()
    assert (ended["state"], ended["error"]) == ("failed", "cancelled at transfer")
    assert [r["node_name"] for r in api.admin.get("/v1/replicas").json()] == ["a"]
    assert api.admin.delete(f"/v1/moves/{api_move}").status_code == 409


def test_a_cancelled_move_that_had_committed_ends_done(
    api: Api, a: Node, b: Node, reports: list[InstanceReport], api_move: str
) -> None:
    b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=api_move, offer=OFFER)])
    a.beat(reports, migration_host="10.0.0.1")
    assert api.admin.delete(f"/v1/moves/{api_move}").status_code == 200
    done = MoveReport(move=api_move, state="done", step="done")
    a.beat(reports, migration_host="10.0.0.1", move_reports=[done])
    assert api.admin.get(f"/v1/moves/{api_move}").json()["state"] == "done"
    assert [r["node_name"] for r in api.admin.get("/v1/replicas").json()] == ["b"]
    r = api.admin.delete(f"/v1/moves/{api_move}")
    assert r.status_code == 409 and "done" in r.text


def test_a_drain_replaces_a_replica_whose_move_was_cancelled(
    api: Api, controller: Controller, a: Node, b: Node, replica: str, reports: list[InstanceReport]
) -> None:
    assert api.admin.post("/v1/nodes/a/drain", params={"migrate": "snapshot"}).status_code == 200
    _pass(controller)
    (move,) = _active(controller)
    assert api.admin.delete(f"/v1/moves/{move.id}").status_code == 200
    _pass(controller)  # no second try: replaced on b, the original runs on until then
    assert _active(controller) == []
    placed = _replicas(controller)
    assert (replica, a.id) in placed and len(placed) == 2


def test_a_node_above_the_rebalance_threshold_has_one_replica_moved_at_a_time(
    tmp_path: Path, db_url: str
) -> None:
    """``rebalance_above``: three 256 MiB replicas on a 1 GiB node (75%, above 70%): one moves
    to a node that takes part in moves (a node without a migration host never receives one),
    no second move while it is under way, and none once the node is at or below the threshold;
    the replica keeps its id and changes node only when the source reports the move done."""
    controller = make_controller(tmp_path / "controller", db_url, rebalance_above=0.7)
    try:
        with api_for(controller) as api:
            a = api.enrol("a")
            a.memory_mib = 1024
            a.beat(migration_host="10.0.0.1")
            r = api.admin.post(
                "/v1/deployments",
                json={"name": "app", "image": IMAGE, "memory_mib": 256, "replicas": 3},
            )
            assert r.status_code in (200, 201), r.text
            _pass(controller)
            reports = _running(a.beat(migration_host="10.0.0.1"))
            assert len(reports) == 3
            a.beat(reports, migration_host="10.0.0.1")
            c = api.enrol("c")  # has room, takes no part in moves
            c.beat()
            _pass(controller)
            assert _active(controller) == []  # nowhere to go yet
            b = api.enrol("b")
            b.beat(migration_host="10.0.0.2")
            _pass(controller)
            (move,) = _active(controller)
            assert (move.source, move.target, move.mode) == (a.id, b.id, "live")
            _pass(controller)  # one move per node at a time
            assert _active(controller) == [move]
            assert b.beat(migration_host="10.0.0.2").offer_requests == [move.id]
            b.beat(migration_host="10.0.0.2", offers=[MoveOffer(move=move.id, offer=OFFER)])
            (order,) = a.beat(reports, migration_host="10.0.0.1").moves
            assert order.mode == "live"
            done = MoveReport(move=move.id, state="done", step="done")
            left = _running(a.beat(migration_host="10.0.0.1", move_reports=[done]))
            a.beat(left, migration_host="10.0.0.1")
            assert _listed(b.beat(migration_host="10.0.0.2")) == [move.replica]
            _pass(controller)  # a at 50%: nothing more moves
            assert _active(controller) == []
            placed = _replicas(controller)
            assert len(placed) == 3 and (move.replica, b.id) in placed
            assert sorted(node for _, node in placed) == sorted([a.id, a.id, b.id])
    finally:
        controller.close()
