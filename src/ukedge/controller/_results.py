"""Results the nodes deliver: stored once, listed by filter, followed live.

Agents deliver at least once (a batch whose answer was lost is sent again), so each record is
keyed by (node, instance, seq) and stored with ``INSERT … ON CONFLICT DO NOTHING``: a batch sent
twice stores each record once, in one transaction, and the answer says through which seq the
records are kept, so the agent may drop them from its spool. The autoincrement ``id`` orders
records controller-wide: it is the paging cursor (``after_id``) and the SSE event id a client
resumes from (``Last-Event-ID``).

On PostgreSQL, batches from several controller processes take turns (a transaction-scoped
advisory lock), so ids become visible in increasing order and a follower's cursor never passes
a record that commits later.

Followers are woken by an in-process :class:`Notifier` when this process stores a batch, and
poll the table every half second besides, so records another controller process stored (several
controllers on one PostgreSQL) reach them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

from sqlalchemy import Row, Select, select, text

from ukedge.controller._db import Database, insert_ignoring_duplicates, nodes, results
from ukedge.controller._models import ResultRecordOut
from ukedge.host.link import ResultBatch

__all__ = ["Notifier", "ResultQuery", "query_results", "store_batch", "tail_cursor"]

#: Longest result line kept (longer ones are cut; the spool caps lines at the node as well).
_MAX_LINE = 64 * 1024
#: Serialises result inserts on PostgreSQL ("ukedge-r" in ASCII); see :func:`store_batch`.
_RESULTS_LOCK = 0x756B656467652D72


class Notifier:
    """Wakes async waiters (in any event loop) when a thread says something new was stored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop closed; its waiter is leaving
                loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        """Return when notified or after ``timeout`` seconds, whichever comes first."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)


def store_batch(db: Database, node_id: str, batch: ResultBatch, *, now: float) -> int:
    """Store the batch's records not stored yet; returns the highest seq of the batch."""
    rows = [
        {
            "node_id": node_id,
            "instance": batch.instance,
            "seq": record.seq,
            "deployment": batch.deployment,
            "ts": record.ts,
            "received_at": now,
            "line": record.line[:_MAX_LINE],
            "error": record.error,
        }
        for record in batch.records
    ]
    with db.write() as connection:
        if connection.dialect.name == "postgresql":
            # Ids must commit in the order they are drawn, or a follower that has read id 12
            # would never see an id 11 committed after it: batches take turns (SQLite's
            # BEGIN IMMEDIATE serialises them anyway).
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _RESULTS_LOCK})
        connection.execute(insert_ignoring_duplicates(connection, results), rows)
    return max(record.seq for record in batch.records)


class ResultQuery:
    """Filters of ``GET /v1/results`` and of the stream."""

    def __init__(
        self,
        *,
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> None:
        self.deployment = deployment
        self.node = node
        self.since = since
        self.until = until


def _out(row: Row[Any]) -> ResultRecordOut:
    try:
        parsed: object | None = json.loads(row.line)
        raw = None
    except ValueError:
        parsed, raw = None, row.line
    return ResultRecordOut(
        id=row.id,
        node_id=row.node_id,
        node_name=row.node_name or "",
        deployment=row.deployment,
        instance=row.instance,
        seq=row.seq,
        ts=row.ts,
        received_at=row.received_at,
        result=parsed,
        error=row.error,
        raw=raw,
    )


def _filtered(statement: Select[Any], query: ResultQuery) -> Select[Any]:
    statement = statement.outerjoin(nodes, nodes.c.id == results.c.node_id)
    if query.deployment is not None:
        statement = statement.where(results.c.deployment == query.deployment)
    if query.node is not None:
        statement = statement.where(
            (results.c.node_id == query.node) | (nodes.c.name == query.node)
        )
    if query.since is not None:
        statement = statement.where(results.c.ts >= query.since)
    if query.until is not None:
        statement = statement.where(results.c.ts < query.until)
    return statement


def query_results(
    db: Database, query: ResultQuery, *, after_id: int = 0, limit: int = 1000
) -> list[ResultRecordOut]:
    """Records matching ``query`` with ids above ``after_id``, oldest first."""
    statement = _filtered(
        select(results, nodes.c.name.label("node_name")).where(results.c.id > after_id), query
    )
    with db.read() as connection:
        rows = connection.execute(statement.order_by(results.c.id).limit(limit)).all()
    return [_out(row) for row in rows]


def tail_cursor(db: Database, query: ResultQuery, tail: int) -> int:
    """The cursor after which only the newest ``tail`` records matching ``query`` come: a
    follower that wants the recent past, not the whole history, starts there."""
    statement = _filtered(select(results.c.id), query)
    with db.read() as connection:
        found = connection.execute(
            statement.order_by(results.c.id.desc()).offset(tail).limit(1)
        ).scalar()
    return int(found or 0)
