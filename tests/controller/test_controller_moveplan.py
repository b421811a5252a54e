"""Which replicas of a node drained with --migrate move, where, and which are replaced."""

from __future__ import annotations

import itertools
from dataclasses import replace

from ukedge.controller import DeploymentView, NodeView, ReplicaState, ReplicaView, Resources
from ukedge.controller._moveplan import MovePlan, plan_moves
from ukedge.controller._moves import MAX_ATTEMPTS, Move, MoveState, start

BIG = Resources(memory_mib=1024, vcpus=4)
AGG = DeploymentView(name="agg", revision=2, memory_mib=256, vcpus=1, replicas=3)


def _node(node_id: str, **fields: object) -> NodeView:
    values: dict[str, object] = {
        "id": node_id,
        "name": node_id,
        "ready": True,
        "architecture": "x86_64",
        "capacity": BIG,
        **fields,
    }
    return NodeView(**values)  # type: ignore[arg-type]


def _replica(replica: str, node: str, **fields: object) -> ReplicaView:
    values: dict[str, object] = {
        "deployment": "agg",
        "replica": replica,
        "revision": 2,
        "node_id": node,
        "state": ReplicaState.RUNNING,
        "resources": Resources(256, 1),
        **fields,
    }
    return ReplicaView(**values)  # type: ignore[arg-type]


def _plan(
    nodes: list[NodeView],
    replicas: list[ReplicaView],
    moves: list[Move] | None = None,
    *,
    movable: tuple[str, ...] = ("A", "B", "C"),
) -> MovePlan:
    ids = (f"m{n}" for n in itertools.count(1))
    return plan_moves(
        [AGG],
        nodes,
        replicas,
        moves or [],
        migrate={"A": "live"},
        movable=movable,
        instance_name=lambda d, r: f"{d}-{r}",
        now=10.0,
        new_id=lambda: next(ids),
    )


def test_running_replicas_of_the_draining_node_move_and_are_kept_from_replacement() -> None:
    nodes = [_node("A", draining=True), _node("B"), _node("C", capacity=Resources(256, 1))]
    replicas = [_replica("r1", "A"), _replica("r2", "A"), _replica("r3", "B")]
    plan = _plan(nodes, replicas)
    starts = plan.start
    assert [(m.replica, m.source, m.mode, m.instance, m.attempt) for m in starts] == [
        ("r1", "A", "live", "agg-r1", 1),
        ("r2", "A", "live", "agg-r2", 1),
    ]
    assert all(m.target in ("B", "C") and m.state == MoveState.OFFER for m in starts)
    # C holds one replica at most: the two moves do not both go there.
    assert [m.target for m in starts].count("C") <= 1
    assert plan.keep == {("agg", "r1"), ("agg", "r2")}
    assert plan.fallbacks == []


def test_what_cannot_move_is_replaced_and_says_why() -> None:
    nodes = [_node("A", draining=True), _node("B")]
    replicas = [
        _replica("old", "A", revision=1),
        _replica("starting", "A", state=ReplicaState.STARTING),
    ]
    plan = _plan(nodes, replicas)
    assert plan.start == [] and plan.keep == set()
    reasons = {r: why for _, r, why in plan.fallbacks}
    assert "old revision" in reasons["old"] and "starting" in reasons["starting"]

    only = _plan(nodes, [_replica("r1", "A")], movable=("A",))
    assert "no node" in only.fallbacks[0][2]
    source_cannot = _plan(nodes, [_replica("r1", "A")], movable=("B",))
    assert "no migration host" in source_cannot.fallbacks[0][2]


def test_a_move_under_way_is_kept_a_failed_one_retried_then_replaced() -> None:
    nodes = [_node("A", draining=True), _node("B")]
    replicas = [_replica("r1", "A")]
    first = start(
        "m0",
        deployment="agg",
        replica="r1",
        instance="agg-r1",
        source="A",
        target="B",
        mode="live",
        now=1.0,
    )
    under_way = _plan(nodes, replicas, [first])
    assert under_way.start == [] and under_way.keep == {("agg", "r1")}

    failed = replace(first, state=MoveState.FAILED, error="channel broke")
    retry = _plan(nodes, replicas, [failed])
    (again,) = retry.start
    assert again.attempt == 2 and again.id != "m0"

    tries = [replace(failed, id=f"m{n}", attempt=n + 1) for n in range(MAX_ATTEMPTS)]
    given_up = _plan(nodes, replicas, tries)
    assert given_up.start == [] and given_up.keep == set()
    (fallback,) = given_up.fallbacks
    assert "failed" in fallback[2] and "channel broke" in fallback[2]


def test_only_a_ready_draining_node_in_migrate_is_considered() -> None:
    replicas = [_replica("r1", "A")]
    assert _plan([_node("A"), _node("B")], replicas).start == []
    lost = _plan([_node("A", draining=True, ready=False), _node("B")], replicas)
    assert lost.start == [] and lost.fallbacks == []
