"""Republish the results the controller stores to MQTT brokers (the optional bridge).

Nodes deliver to the controller; consumers that already speak MQTT (dashboards, stream
processors, a clustered broker at scale) get the same records from one place, in the same
envelope and on the same topics (``ukedge/<node>/<instance>/results``) an agent publishing
directly would use. Each destination has a cursor in the database, the id of the last stored
result it confirmed, so delivery is at least once and a new leader (several controllers on one
PostgreSQL) continues where the old one stopped. Only the leader bridges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Row, insert, select, update

from ukedge.controller._db import Database, nodes, result_cursors, results
from ukedge.host.results.sinks import ResultRecord, ResultSink, SinkUnavailable

__all__ = ["ResultBridge"]

log = logging.getLogger(__name__)


class ResultBridge:
    """Moves stored results to each sink, oldest first, a batch per run of one instance."""

    def __init__(self, db: Database, sinks: Sequence[ResultSink], *, limit: int = 1000) -> None:
        self.db = db
        self.sinks = list(sinks)
        self.limit = limit
        self._down: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def run_once(self) -> int:
        """Deliver what each sink has not confirmed yet (up to ``limit`` records per sink);
        returns how many records were confirmed."""
        return sum(self._advance(sink) for sink in self.sinks)

    def backlog(self) -> dict[str, int]:
        """Records each sink has not confirmed yet (counted up to ``limit``)."""
        return {sink.name: len(self._pending(sink.name)) for sink in self.sinks}

    def _advance(self, sink: ResultSink) -> int:
        rows = self._pending(sink.name)
        confirmed = 0
        for run in _runs(rows):
            batch = [_record(row) for row in run]
            try:
                through = sink.deliver(batch)
            except SinkUnavailable as exc:
                if sink.name not in self._down:
                    log.warning("result bridge %s: %s; will retry", sink.name, exc)
                    self._down.add(sink.name)
                break
            if sink.name in self._down:
                log.info("result bridge %s: delivering again", sink.name)
                self._down.discard(sink.name)
            done = [row for row in run if row.seq <= through]
            if done:
                self._save_cursor(sink.name, done[-1].id)
                confirmed += len(done)
            if len(done) < len(run):
                break  # the rest of this run again next pass, before anything newer
        return confirmed

    def _pending(self, sink: str) -> list[Row[Any]]:
        with self.db.read() as connection:
            cursor = connection.execute(
                select(result_cursors.c.last_id).where(result_cursors.c.sink == sink)
            ).scalar()
            statement = (
                select(results, nodes.c.name.label("node_name"))
                .outerjoin(nodes, nodes.c.id == results.c.node_id)
                .where(results.c.id > (cursor or 0))
                .order_by(results.c.id)
                .limit(self.limit)
            )
            return list(connection.execute(statement).all())

    def _save_cursor(self, sink: str, last_id: int) -> None:
        with self.db.write() as connection:
            changed = connection.execute(
                update(result_cursors).where(result_cursors.c.sink == sink).values(last_id=last_id)
            ).rowcount
            if not changed:
                connection.execute(insert(result_cursors).values(sink=sink, last_id=last_id))

    async def run(self, leading: Callable[[], bool], interval_s: float) -> None:
        """Bridge every ``interval_s`` while this process leads (the app's lifespan runs it)."""
        while True:
            if leading():
                try:
                    await asyncio.to_thread(self.run_once)
                except Exception:
                    log.exception("result bridge pass failed; trying again")
            await asyncio.sleep(interval_s)

    def start(self, leading: Callable[[], bool], interval_s: float = 0.5) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self.run(leading, interval_s), name="ukedge-result-bridge"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _runs(rows: Sequence[Row[Any]]) -> Iterator[list[Row[Any]]]:
    """Consecutive rows of one instance of one node with increasing seq: what one sink batch
    may hold."""
    run: list[Row[Any]] = []
    for row in rows:
        if run and (
            (row.node_id, row.instance) != (run[-1].node_id, run[-1].instance)
            or row.seq <= run[-1].seq
        ):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def _record(row: Row[Any]) -> ResultRecord:
    return ResultRecord(
        instance_id=row.instance,
        node=row.node_name or row.node_id,
        seq=row.seq,
        ts=row.ts,
        line=row.line,
        error=row.error,
    )
