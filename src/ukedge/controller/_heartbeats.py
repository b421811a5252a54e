"""Heartbeats written in groups: many nodes' heartbeats share one transaction and its commit.

A thousand nodes beating every two seconds are 500 small writes a second. Written one
transaction each, every heartbeat pays a commit (an fsync on SQLite, a round trip and a WAL
flush on PostgreSQL) and a worker thread of the API; here the API's event loop queues each
heartbeat and awaits its reply while a writer thread takes everything queued (up to
``max_batch``) into one transaction: whatever arrives while a commit runs goes into the next
one, so the batches grow with the load and a lone heartbeat waits for nothing. A reply is
released only once its transaction committed.

Most heartbeats repeat the node's last one: the same instances in the same states, the desired
state applied. Such a heartbeat only moves the node's last-seen time
(:func:`ukedge.controller._heartbeat.touch`, one conditional UPDATE by primary key) when this
process recorded the same content in full before, from the same credential, and the database
shows that nothing changed since (the condition is in the UPDATE, so it holds across
controller processes); otherwise it is recorded in full (:func:`record`).

A heartbeat that fails (a wrong credential, a value the database refuses) fails alone: the
credential is checked before anything of that heartbeat is written, and when a statement fails
the batch is rolled back and its heartbeats are written again one transaction each.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from ukedge.controller._db import Database
from ukedge.controller._heartbeat import record, touch
from ukedge.errors import ControllerError
from ukedge.host.link import Heartbeat, HeartbeatReply

__all__ = ["HeartbeatWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Seen:
    """What this process last recorded in full for a node, with its desired state applied."""

    credential: bytes  # sha256 of the credential that heartbeat carried
    content: bytes  # sha256 of the heartbeat
    generation: int
    at: float  # the last_heartbeat written


@dataclass
class _Item:
    node_id: str
    credential: str
    beat: Heartbeat
    credential_hash: bytes
    content: bytes
    future: Future[HeartbeatReply]


_STOP = None


class HeartbeatWriter:
    """Records heartbeats in group-committed transactions (see the module's text).

    ``writers`` threads each take a batch at a time (one for SQLite, whose writes serialise
    anyway; several for PostgreSQL). Threads start with the first heartbeat; :meth:`close`
    stops them and fails what is still queued.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        interval: float,
        writers: int = 1,
        max_batch: int = 256,
    ) -> None:
        self.db = db
        self.clock = clock
        self.interval = interval
        self.writers = writers
        self.max_batch = max_batch
        #: Heartbeats answered by moving only the last-seen time, and those recorded in full.
        self.touched = 0
        self.recorded = 0
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._seen: dict[str, _Seen] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def submit(self, node_id: str, credential: str, beat: Heartbeat) -> HeartbeatReply:
        """Queue ``beat`` and wait for its reply (after its transaction committed)."""
        return await asyncio.wrap_future(self.put(node_id, credential, beat))

    def put(self, node_id: str, credential: str, beat: Heartbeat) -> Future[HeartbeatReply]:
        """Queue ``beat``; the future gets its reply or its error."""
        future: Future[HeartbeatReply] = Future()
        item = _Item(
            node_id,
            credential,
            beat,
            hashlib.sha256(credential.encode()).digest(),
            hashlib.sha256(beat.model_dump_json().encode()).digest(),
            future,
        )
        with self._lock:
            if self._closed:
                raise ControllerError("the controller is shutting down", status=503)
            if not self._threads:
                self._start()
            self._queue.put(item)
        return future

    def _start(self) -> None:
        for index in range(self.writers):
            thread = threading.Thread(
                target=self._run, name=f"ukedge-heartbeats-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the writer threads (each finishes its batch); fail what is still queued."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._queue.put(_STOP)
        for thread in threads:
            thread.join(30)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    ControllerError("the controller is shutting down", status=503)
                )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            live = [i for i in batch if i.future.set_running_or_notify_cancel()]
            if live:
                self._write(live)
            if stop:
                return

    def _write(self, batch: list[_Item]) -> None:
        batch.sort(key=lambda item: item.node_id)  # rows locked in one order by every batch
        try:
            outcomes = self._attempt(batch)
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [exc]
            else:
                log.debug("a batch of %d heartbeats failed (%s); one by one", len(batch), exc)
                outcomes = []
                for item in batch:
                    try:
                        outcomes.extend(self._attempt([item]))
                    except Exception as alone:
                        outcomes.append(alone)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def _attempt(self, batch: list[_Item]) -> list[HeartbeatReply | BaseException]:
        """One transaction for ``batch``; the cache is updated only once it committed."""
        now = self.clock()
        outcomes: list[HeartbeatReply | BaseException] = []
        seen: dict[str, _Seen | None] = {}
        touched = 0
        with self.db.write() as connection:
            for item in batch:
                known = seen[item.node_id] if item.node_id in seen else self._seen.get(item.node_id)
                if (
                    known is not None
                    and hmac.compare_digest(known.credential, item.credential_hash)
                    and known.content == item.content
                    and touch(
                        connection,
                        item.node_id,
                        previous=known.at,
                        generation=known.generation,
                        now=now,
                    )
                ):
                    seen[item.node_id] = _Seen(
                        known.credential, known.content, known.generation, now
                    )
                    outcomes.append(HeartbeatReply(heartbeat_interval_s=self.interval))
                    touched += 1
                    continue
                try:
                    reply, generation = record(
                        connection,
                        item.node_id,
                        item.credential,
                        item.beat,
                        now=now,
                        interval=self.interval,
                    )
                except ControllerError as exc:  # refused before it wrote anything
                    seen[item.node_id] = None
                    outcomes.append(exc)
                    continue
                settled = generation is not None and generation == item.beat.applied_generation
                seen[item.node_id] = (
                    _Seen(item.credential_hash, item.content, generation, now)
                    if settled and generation is not None
                    else None
                )
                outcomes.append(reply)
        with self._lock:
            for node_id, value in seen.items():
                if value is None:
                    self._seen.pop(node_id, None)
                else:
                    self._seen[node_id] = value
            self.touched += touched
            self.recorded += len(batch) - touched
        return outcomes
