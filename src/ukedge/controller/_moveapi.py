"""The operator's moves (``/v1/moves``, ``ukedge moves``, ``ukedge migrate``): listing them,
starting one replica's move where the operator says, and cancelling one.

Each call is one transaction; a cancel that races a heartbeat advancing the same move is
refused (409) rather than undoing it (:func:`~ukedge.controller._movestore.save_move`).
A move record never carries the offer: its ticket is a secret.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Row, select

from ukedge.controller._db import Database, moves, nodes, replicas
from ukedge.controller._fleet import ReplicaState
from ukedge.controller._models import MoveRecord, MoveRequest
from ukedge.controller._movepass import start_moves
from ukedge.controller._moves import MoveState, cancel, start
from ukedge.controller._movestore import active_moves, move_from_row, save_move
from ukedge.controller._nodes import find_node
from ukedge.errors import ControllerError

__all__ = ["cancel_move", "find_move", "list_moves", "start_api_move"]

log = logging.getLogger(__name__)


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
        move = move_from_row(row)
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
