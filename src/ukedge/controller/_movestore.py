"""Controller-driven moves in the database, and their relay through heartbeats.

Every change happens inside the heartbeat's transaction that brought the news (see
:mod:`ukedge.controller._heartbeat`): a crash loses the heartbeat and the node repeats it, so
a move never half-advances. The replica's row switches to the target in the same transaction
that records the source's ``done``, together with a new generation for both nodes, so the
source's desired state stops listing it and the target's starts: at no moment do both list it.

While a node has a move in flight as source or target, its heartbeats are recorded in full
(never the cheap "nothing changed" path), so each reply carries what the move needs next.

The reconciler's planning of moves is in :mod:`._movepass`, the operator's API in
:mod:`._moveapi`; both read and write moves through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Row, and_, or_, select, update

from ukedge.controller._db import moves, replicas
from ukedge.controller._moves import (
    Move,
    MoveState,
    cancels,
    expire,
    offer_requests,
    on_offer,
    on_report,
)
from ukedge.controller._moves import orders as move_orders
from ukedge.controller._nodes import bump_generations
from ukedge.host.link import Heartbeat, MoveOffer, MoveOrder
from ukedge.host.migration import MigrationOffer

__all__ = [
    "Relay",
    "active_moves",
    "move_from_row",
    "moving_replicas",
    "relay",
    "save_move",
]


def move_from_row(row: Row[Any]) -> Move:
    values = dict(row._mapping)
    values["state"] = MoveState(values["state"])
    return Move(**values)


def active_moves(connection: Connection, node_id: str | None = None) -> list[Move]:
    """Moves not yet ended; with ``node_id``, those it is the source or the target of."""
    query = select(moves).where(moves.c.state.in_([s.value for s in MoveState if s.active]))
    if node_id is not None:
        query = query.where(or_(moves.c.source == node_id, moves.c.target == node_id))
    return [move_from_row(row) for row in connection.execute(query.order_by(moves.c.id)).all()]


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
