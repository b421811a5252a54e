"""Controller-driven moves in the database, and their relay through heartbeats.

Every change happens inside the heartbeat's transaction that brought the news (see
:mod:`ukedge.controller._heartbeat`): a crash loses the heartbeat and the node repeats it, so
a move never half-advances. The replica's row switches to the target in the same transaction
that records the source's ``done``, together with a new generation for both nodes, so the
source's desired state stops listing it and the target's starts: at no moment do both list it.

While a node has a move in flight as source or target, its heartbeats are recorded in full
(never the cheap "nothing changed" path), so each reply carries what the move needs next.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Row, and_, or_, select, update

from ukedge.controller._db import Database, moves, nodes, replicas
from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    ScoringStrategy,
)
from ukedge.controller._models import MoveRecord, MoveRequest
from ukedge.controller._moveplan import REBALANCE_RETRY_S, MovePlan, plan_moves, plan_rebalance
from ukedge.controller._moves import (
    Move,
    MoveState,
    cancel,
    cancels,
    expire,
    offer_requests,
    on_offer,
    on_report,
    start,
)
from ukedge.controller._moves import orders as move_orders
from ukedge.controller._nodes import bump_generations, find_node
from ukedge.errors import ControllerError
from ukedge.host.link import Heartbeat, MoveMode, MoveOffer, MoveOrder
from ukedge.host.migration import MigrationOffer

__all__ = [
    "Relay",
    "active_moves",
    "cancel_move",
    "find_move",
    "list_moves",
    "moving_events",
    "moving_replicas",
    "plan_drain_moves",
    "plan_rebalance_moves",
    "relay",
    "save_move",
    "start_api_move",
    "start_moves",
]

log = logging.getLogger(__name__)


def _move(row: Row[Any]) -> Move:
    values = dict(row._mapping)
    values["state"] = MoveState(values["state"])
    return Move(**values)


def active_moves(connection: Connection, node_id: str | None = None) -> list[Move]:
    """Moves not yet ended; with ``node_id``, those it is the source or the target of."""
    query = select(moves).where(moves.c.state.in_([s.value for s in MoveState if s.active]))
    if node_id is not None:
        query = query.where(or_(moves.c.source == node_id, moves.c.target == node_id))
    return [_move(row) for row in connection.execute(query.order_by(moves.c.id)).all()]


def save_move(connection: Connection, move: Move, *, previous: Move | None = None) -> bool:
    """Insert ``move``, or with ``previous`` (the move as read) write it only if its row is
    still as read: two heartbeats (the source's and the target's, in two controller processes
    on PostgreSQL) may advance one move at once, and the second must not undo the first. False:
    the row changed meanwhile; the node's next heartbeat sees the new state."""
    values = asdict(move)
    values["state"] = move.state.value
    if previous is None:
        connection.execute(moves.insert().values(values))
        return True
    changed = connection.execute(
        update(moves)
        .where(
            moves.c.id == move.id,
            moves.c.state == previous.state.value,
            moves.c.updated_at == previous.updated_at,
            moves.c.step == previous.step,
        )
        .values(values)
    )
    return bool(changed.rowcount == 1)


class Relay:
    """What a node's heartbeat reply carries for its moves, and whether any is in flight."""

    def __init__(
        self,
        offer_requests: list[str],
        orders: list[MoveOrder],
        cancels: list[str],
        *,
        in_flight: bool,
        recorded: bool,
    ) -> None:
        self.offer_requests = offer_requests
        self.orders = orders
        #: Moves the operator cancelled that the node drives: it cancels them.
        self.cancels = cancels
        #: Some move of the node's has not ended: its heartbeats are recorded in full.
        self.in_flight = in_flight
        #: Some move ended with its replica recorded on the target (generations bumped).
        self.recorded = recorded


def _checked(report: MoveOffer) -> MoveOffer:
    """An offer the source could not use fails the try here, naming what is wrong."""
    if report.offer is None:
        return report
    try:
        MigrationOffer.model_validate(report.offer)
    except ValidationError as exc:
        return MoveOffer(move=report.move, error=f"the target's offer is malformed: {exc}")
    return report


def relay(connection: Connection, node_id: str, beat: Heartbeat, *, now: float) -> Relay:
    """Apply ``beat``'s offers and move reports to the node's moves (in ``connection``'s
    transaction); a move that is done records its replica on the target."""
    current = active_moves(connection, node_id)
    if not current:
        return Relay([], [], [], in_flight=False, recorded=False)
    offers = [_checked(report) for report in beat.offers]
    kept: list[Move] = []
    recorded = False
    for move in current:
        after = move
        for offer in offers:
            after = on_offer(after, offer, node=node_id, now=now)
        for report in beat.move_reports:
            after = on_report(after, report, node=node_id, now=now)
        after = expire(after, now=now)
        if after != move and not save_move(connection, after, previous=move):
            continue  # advanced meanwhile by another heartbeat: not ours to act on
        if after.state == MoveState.DONE and move.state != MoveState.DONE:
            _record_on_target(connection, after)
            recorded = True
        kept.append(after)
    in_flight = [m for m in kept if m.state.active]
    if beat.migration_host is None:  # an agent that does not take part in moves
        return Relay([], [], [], in_flight=bool(in_flight), recorded=recorded)
    return Relay(
        offer_requests(in_flight, node_id),
        move_orders(in_flight, node_id),
        cancels(in_flight, node_id),
        in_flight=bool(in_flight),
        recorded=recorded,
    )


def _record_on_target(connection: Connection, move: Move) -> None:
    connection.execute(
        update(replicas)
        .where(
            and_(
                replicas.c.deployment == move.deployment,
                replicas.c.replica == move.replica,
                replicas.c.node_id == move.source,
            )
        )
        .values(node_id=move.target, report=None)
    )
    bump_generations(connection, {move.source, move.target})


def moving_replicas(connection: Connection) -> Sequence[tuple[str, str]]:
    """(deployment, replica) of every move in flight: the planner leaves these alone."""
    return [(m.deployment, m.replica) for m in active_moves(connection)]


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
            _move(row)
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
        _move(row)
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


def _record(row: Row[Any]) -> MoveRecord:
    values = dict(row._mapping)
    values.pop("offer", None)  # its ticket is a secret
    return MoveRecord.model_validate(values)


def _records(connection: Connection, *where: Any) -> list[MoveRecord]:
    source, target = nodes.alias("source_node"), nodes.alias("target_node")
    query = (
        select(moves, source.c.name.label("source_name"), target.c.name.label("target_name"))
        .outerjoin(source, source.c.id == moves.c.source)
        .outerjoin(target, target.c.id == moves.c.target)
        .where(*where)
        .order_by(moves.c.started_at.desc(), moves.c.id)
    )
    return [_record(row) for row in connection.execute(query).all()]


def list_moves(db: Database, *, active: bool = False) -> list[MoveRecord]:
    where = [moves.c.state.in_([s.value for s in MoveState if s.active])] if active else []
    with db.read() as connection:
        return _records(connection, *where)


def find_move(db: Database, move_id: str) -> MoveRecord:
    with db.read() as connection:
        found = _records(connection, moves.c.id == move_id)
    if not found:
        raise ControllerError(f"no move {move_id!r} (see GET /v1/moves)", status=404)
    return found[0]


def cancel_move(db: Database, move_id: str, *, now: float) -> MoveRecord:
    """Cancel a move (``DELETE /v1/moves/{id}``, ``ukedge moves cancel ID``): one waiting for
    its offer fails now; a moving one is cancelled by its source at its next heartbeat, which
    resumes the instance there as for any failure before the commit (the move then ends
    ``failed``, or ``done`` when the target had committed already). 409 once it has ended."""
    with db.write() as connection:
        row = connection.execute(select(moves).where(moves.c.id == move_id)).one_or_none()
        if row is None:
            raise ControllerError(f"no move {move_id!r} (see GET /v1/moves)", status=404)
        move = _move(row)
        try:
            after = cancel(move, now=now)
        except ValueError as exc:
            raise ControllerError(str(exc), status=409) from None
        if after != move and not save_move(connection, after, previous=move):
            raise ControllerError(
                f"move {move_id} changed meanwhile; look at it again (GET /v1/moves/{move_id})",
                status=409,
            )
        if after != move:
            log.info(
                "deployment %s: the move %s of replica %s was cancelled (%s)",
                move.deployment,
                move.id,
                move.replica,
                "ended" if after.state == MoveState.FAILED else "its node cancels it",
            )
        return _records(connection, moves.c.id == move_id)[0]


def start_api_move(
    db: Database,
    request: MoveRequest,
    *,
    instance_name: Callable[[str, str], str],
    now: float,
) -> MoveRecord:
    """Start moving one replica where the operator says (``ukedge migrate INSTANCE --to
    NODE``): refused, naming why, unless it runs, both nodes are ready and take part in
    moves, the target takes replicas and no other move of it is under way. One try: a failed
    move leaves the replica running where it was."""
    with db.write() as connection:
        found = [
            row
            for row in connection.execute(
                select(
                    replicas.c.deployment, replicas.c.replica, replicas.c.node_id, replicas.c.state
                )
            ).all()
            if instance_name(row.deployment, row.replica) == request.instance
        ]
        if not found:
            raise ControllerError(
                f"no replica whose instance is {request.instance!r} (see `ukedge replicas`: "
                "instances are named DEPLOYMENT-REPLICA)",
                status=404,
            )
        replica = found[0]
        if replica.node_id is None or replica.state != ReplicaState.RUNNING.value:
            raise ControllerError(
                f"{request.instance} is {replica.state}: only a running replica moves",
                status=409,
            )
        source = find_node(connection, replica.node_id)
        target = find_node(connection, request.to)
        if target.id == source.id:
            raise ControllerError(
                f"{request.instance} runs on node {target.name} already", status=409
            )
        for node in (source, target):
            if not node.ready:
                raise ControllerError(f"node {node.name} is NotReady", status=409)
            if node.migration_host is None:
                raise ControllerError(
                    f"node {node.name} takes no part in moves: start its agent with "
                    "--migration-host",
                    status=409,
                )
        if target.cordoned or target.draining:
            raise ControllerError(
                f"node {target.name} takes no new replicas (cordoned or draining; "
                "`ukedge node uncordon` it first)",
                status=409,
            )
        if any(
            (m.deployment, m.replica) == (replica.deployment, replica.replica)
            for m in active_moves(connection)
        ):
            raise ControllerError(f"{request.instance} is moving already", status=409)
        move = start(
            secrets.token_hex(8),
            deployment=replica.deployment,
            replica=replica.replica,
            instance=request.instance,
            source=source.id,
            target=target.id,
            mode=request.mode,
            now=now,
            postcopy=request.postcopy,
        )
        start_moves(connection, [move])
        return _records(connection, moves.c.id == move.id)[0]
