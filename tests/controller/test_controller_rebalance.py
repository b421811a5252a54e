"""Rebalancing by moves (pure): which replica leaves a node above the memory threshold, where
it goes, and when nothing moves (and why)."""

from __future__ import annotations

import itertools

from ukedge.controller import DeploymentView, NodeView, ReplicaState, ReplicaView, Resources
from ukedge.controller._moveplan import (
    REBALANCE_RETRY_S,
    MovePlan,
    memory_share,
    plan_rebalance,
)
from ukedge.controller._moves import Move, MoveState, start
from ukedge.controller._scheduler import Ledger

NODE = Resources(memory_mib=1000, vcpus=8)
SMALL = DeploymentView(name="small", revision=1, memory_mib=100, vcpus=1, replicas=5)
LARGE = DeploymentView(name="large", revision=1, memory_mib=400, vcpus=1, replicas=2)


def _node(node_id: str, **fields: object) -> NodeView:
    values: dict[str, object] = {
        "id": node_id,
        "name": f"n-{node_id}",
        "ready": True,
        "architecture": "x86_64",
        "capacity": NODE,
        **fields,
    }
    return NodeView(**values)  # type: ignore[arg-type]


def _replica(deployment: DeploymentView, replica: str, node: str, **fields: object) -> ReplicaView:
    values: dict[str, object] = {
        "deployment": deployment.name,
        "replica": replica,
        "revision": deployment.revision,
        "node_id": node,
        "state": ReplicaState.RUNNING,
        "resources": Resources(deployment.memory_mib, deployment.vcpus),
        **fields,
    }
    return ReplicaView(**values)  # type: ignore[arg-type]


def _plan(
    nodes: list[NodeView],
    replicas: list[ReplicaView],
    moves: list[Move] | None = None,
    *,
    above: float = 0.8,
    movable: tuple[str, ...] = ("A", "B", "C"),
    now: float = 1000.0,
) -> MovePlan:
    ids = (f"m{n}" for n in itertools.count(1))
    return plan_rebalance(
        [SMALL, LARGE],
        nodes,
        replicas,
        moves or [],
        above=above,
        mode="live",
        movable=movable,
        instance_name=lambda d, r: f"{d}-{r}",
        now=now,
        new_id=lambda: next(ids),
    )


def _full_a() -> list[ReplicaView]:
    """Node A at 90%: one large replica (400) and five small ones (100 each)."""
    return [_replica(LARGE, "l1", "A"), *(_replica(SMALL, f"s{i}", "A") for i in range(5))]


def test_the_smallest_replica_that_is_enough_moves_to_a_node_that_stays_under() -> None:
    nodes = [_node("A"), _node("B"), _node("C", capacity=Resources(100, 8))]
    plan = _plan(nodes, _full_a())
    [move] = plan.start
    assert (move.deployment, move.source, move.target, move.mode) == ("small", "A", "B", "live")
    assert move.state == MoveState.OFFER and move.instance == f"small-{move.replica}"
    assert plan.keep == {("small", move.replica)}
    assert plan.events == [
        f"node n-A holds 90% of its memory, above 80%: moving replica {move.replica} of small "
        "to node n-B (live)"
    ]
    assert plan.fallbacks == []


def test_the_largest_moves_when_no_single_one_is_enough() -> None:
    nodes = [_node("A"), _node("B")]
    replicas = [_replica(LARGE, "l1", "A"), _replica(LARGE, "l2", "A"), _replica(SMALL, "s", "A")]
    [move] = _plan(nodes, replicas, above=0.45).start
    assert (move.deployment, move.replica, move.target) == ("large", "l1", "B")


def test_one_move_per_node_at_a_time_and_none_into_a_node_that_would_be_above() -> None:
    nodes = [_node("A"), _node("B"), _node("C")]
    replicas = [*_full_a(), _replica(LARGE, "l2", "B"), _replica(SMALL, "x", "B")]
    replicas += [_replica(SMALL, f"c{i}", "C") for i in range(7)]  # C at 70%: not even 100 more
    plan = _plan(nodes, replicas)
    [move] = plan.start
    assert move.target == "B"  # B at 50% + 100 = 60%
    under_way = start(
        "m0", deployment="small", replica="s0", instance="small-s0", source="A", target="B",
        mode="live", now=990.0,
    )  # fmt: skip
    busy = _plan(nodes, replicas, [under_way])
    assert busy.start == []  # A has a move under way (B too)
    nodes_b_full = [_node("A"), _node("B"), _node("C", capacity=Resources(100, 8))]
    crowded = [*_full_a(), *(_replica(SMALL, f"b{i}", "B") for i in range(8))]
    plan = _plan(nodes_b_full, crowded)
    assert plan.start == []
    assert plan.events == [
        "node n-A holds 90% of its memory, above 80%, but no node that takes part in moves has "
        "room for one of its replicas and stays at or below 80%"
    ]


def test_nothing_moves_under_the_threshold_or_off_nodes_that_take_no_part() -> None:
    nodes = [_node("A"), _node("B")]
    assert _plan(nodes, _full_a(), above=0.9) == MovePlan()  # exactly at: not above
    assert _plan(nodes, _full_a(), movable=("B",)).start == []
    assert _plan(nodes, _full_a(), movable=("A",)).start == []  # no target takes part
    assert _plan([_node("A", draining=True), _node("B")], _full_a()).start == []  # the drain's


def test_a_failed_move_is_not_retried_from_that_node_for_a_while() -> None:
    nodes = [_node("A"), _node("B")]
    replicas = [_replica(LARGE, "l1", "A"), _replica(LARGE, "l2", "A"), _replica(SMALL, "s", "A")]
    first = _plan(nodes, replicas, above=0.8).start[0]
    assert first.replica == "s"
    failed = Move(**{**first.__dict__, "state": MoveState.FAILED, "updated_at": 1000.0})
    again = _plan(nodes, replicas, [failed], above=0.8, now=1000.0 + 1)
    assert [m.replica for m in again.start] == ["l1"]  # the next best, not the failed one
    later = _plan(nodes, replicas, [failed], above=0.8, now=1000.0 + REBALANCE_RETRY_S)
    assert [m.replica for m in later.start] == ["s"]


def test_replicas_that_cannot_move_are_left_and_said() -> None:
    nodes = [_node("A"), _node("B")]
    replicas = [
        _replica(LARGE, "l1", "A", state=ReplicaState.STARTING),
        _replica(LARGE, "l2", "A", revision=0),
        _replica(SMALL, "s", "A", state=ReplicaState.FAILED),
    ]
    assert memory_share(nodes[0], Ledger(replicas)) == 0.8  # the failed one holds nothing
    plan = _plan(nodes, replicas, above=0.7)
    assert plan.start == []
    assert plan.events == [
        "node n-A holds 80% of its memory, above 70%, but none of its replicas can move now"
    ]
