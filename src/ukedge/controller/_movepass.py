"""The reconciler's moves: those to start for drained nodes (``--migrate``) and for
rebalancing, planned from the database by the pure planner (:mod:`._moveplan`), and their start.

A plan is made from a snapshot read earlier in the pass; :func:`start_moves` records only the
planned moves still valid in the transaction it is given (the replica still on its source, no
other move of it under way).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy import Connection, or_, select

from ukedge.controller._db import moves, nodes, replicas
from ukedge.controller._fleet import DeploymentView, NodeView, ReplicaView, ScoringStrategy
from ukedge.controller._moveplan import REBALANCE_RETRY_S, MovePlan, plan_moves, plan_rebalance
from ukedge.controller._moves import Move, MoveState
from ukedge.controller._movestore import active_moves, move_from_row, save_move
from ukedge.controller._nodes import bump_generations
from ukedge.host.link import MoveMode

__all__ = ["moving_events", "plan_drain_moves", "plan_rebalance_moves", "start_moves"]


def plan_drain_moves(
    connection: Connection,
    deployments: Sequence[DeploymentView],
    fleet_nodes: Sequence[NodeView],
    fleet_replicas: Sequence[ReplicaView],
    *,
    instance_name: Callable[[str, str], str],
    now: float,
    strategy: ScoringStrategy,
) -> MovePlan:
    """The moves to start for nodes drained with ``--migrate`` (read in ``connection``).

    Tries count per drain: those a node's earlier drains made (ended before it was drained
    again) neither use up this drain's tries nor say the replica moved already. Every move in
    flight, the API's too, is kept from replacement."""
    in_flight = active_moves(connection)
    busy = {(m.deployment, m.replica) for m in in_flight}
    drained = {
        row.id: (row.drain_migrate, row.drained_at or 0.0, bool(row.drain_postcopy))
        for row in connection.execute(
            select(
                nodes.c.id, nodes.c.drain_migrate, nodes.c.drained_at, nodes.c.drain_postcopy
            ).where(nodes.c.drain_migrate.is_not(None), nodes.c.draining.is_(True))
        )
    }
    if not drained:
        return MovePlan(keep=busy)
    movable = set(
        connection.execute(select(nodes.c.id).where(nodes.c.migration_host.is_not(None))).scalars()
    )
    tried = [
        move
        for move in (
            move_from_row(row)
            for row in connection.execute(select(moves).where(moves.c.source.in_(list(drained))))
        )
        if move.state.active or move.started_at >= drained[move.source][1]
    ]
    plan = plan_moves(
        deployments,
        fleet_nodes,
        fleet_replicas,
        tried,
        migrate={node: mode for node, (mode, _, _) in drained.items()},
        postcopy={node for node, (mode, _, postcopy) in drained.items() if postcopy},
        movable=movable,
        instance_name=instance_name,
        now=now,
        new_id=lambda: secrets.token_hex(8),
        strategy=strategy,
    )
    return replace(plan, keep=plan.keep | busy)


def plan_rebalance_moves(
    connection: Connection,
    drain: MovePlan,
    deployments: Sequence[DeploymentView],
    fleet_nodes: Sequence[NodeView],
    fleet_replicas: Sequence[ReplicaView],
    *,
    above: float,
    mode: MoveMode,
    instance_name: Callable[[str, str], str],
    now: float,
    strategy: ScoringStrategy,
) -> MovePlan:
    """``drain`` (this pass's drain moves) with the rebalancing moves added (the controller's
    ``rebalance_above`` setting): the drain's planned moves count as under way, so a node
    takes part in one move at a time, and the tries of the last
    :data:`~ukedge.controller._moveplan.REBALANCE_RETRY_S` keep a failed one from being
    retried at once."""
    movable = set(
        connection.execute(select(nodes.c.id).where(nodes.c.migration_host.is_not(None))).scalars()
    )
    recent = [
        move_from_row(row)
        for row in connection.execute(
            select(moves).where(
                or_(
                    moves.c.state.in_([s.value for s in MoveState if s.active]),
                    moves.c.updated_at >= now - REBALANCE_RETRY_S,
                )
            )
        )
    ]
    rebalance = plan_rebalance(
        deployments,
        fleet_nodes,
        fleet_replicas,
        [*recent, *drain.start],
        above=above,
        mode=mode,
        movable=movable,
        instance_name=instance_name,
        now=now,
        new_id=lambda: secrets.token_hex(8),
        strategy=strategy,
    )
    return MovePlan(
        start=[*drain.start, *rebalance.start],
        keep=drain.keep | rebalance.keep,
        fallbacks=drain.fallbacks,
        events=[*drain.events, *rebalance.events],
    )


def start_moves(connection: Connection, planned: Sequence[Move]) -> list[Move]:
    """Record the planned moves still valid (the replica on its source, no other move under
    way: the plan was made from an earlier snapshot); both nodes' next heartbeats are then
    recorded in full and carry the move."""
    started = []
    busy = {(m.deployment, m.replica) for m in active_moves(connection)}
    for move in planned:
        where = connection.execute(
            select(replicas.c.node_id).where(
                replicas.c.deployment == move.deployment, replicas.c.replica == move.replica
            )
        ).scalar_one_or_none()
        if where != move.source or (move.deployment, move.replica) in busy:
            continue
        save_move(connection, move)
        bump_generations(connection, {move.source, move.target})
        started.append(move)
    return started


def moving_events(plan: MovePlan) -> list[str]:
    """The pass's events: moves started, replicas replaced instead of moved (and why)."""
    events = [
        f"deployment {m.deployment}: moving replica {m.replica} from node {m.source} to node "
        f"{m.target} ({m.mode}, try {m.attempt})"
        for m in plan.start
    ]
    events += [
        f"deployment {deployment}: replica {replica} is replaced, not moved: {why}"
        for deployment, replica, why in plan.fallbacks
    ]
    return [*events, *plan.events]
