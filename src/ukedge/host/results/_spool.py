"""The durable results spool: numbered result records in SQLite, one cursor per sink.

An instance's results file (``<workdir>/vm/results.jsonl``) only ever grows. The spool reads it
from the byte offset it stored, numbers every complete line (``seq`` from 1, per instance), and
stores the records and the new offset in ONE transaction: after a crash either both happened or
neither did, so a restart reads on from the right place and never numbers a line twice. A last
line without its newline is not consumed; it is read again, whole, once the app finishes it.

Each sink has its own delivery cursor (highest acked ``seq`` per instance), so a broker that is
down holds back only its own deliveries. Records every sink has acked are pruned, except a
bounded tail per instance kept for ``ukedge results``-style reading.

Long on purpose: one SQLite schema and every transaction on it, so that the crash and
concurrency story above is checked in one place.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Float, ForeignKey, Integer, String, Text, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ukedge.errors import UkedgeError, UsageError
from ukedge.host.results.sinks import ResultRecord
from ukedge.sqlite import SQLiteDatabase

__all__ = ["MAX_LINE_BYTES", "Backlog", "ResultSpool", "SpoolError"]

log = logging.getLogger(__name__)

#: A line longer than this is stored in pieces of this size, each an error record, so an app
#: that never writes a newline cannot make the host buffer without bound.
MAX_LINE_BYTES = 1 << 20
#: How much of a results file one ingest reads at most.
_READ_CHUNK = 4 << 20
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


@dataclass(frozen=True)
class Backlog:
    """What one sink has not acked yet: how many records, and when the oldest was read from
    its results file (``None`` when nothing waits)."""

    records: int
    oldest_ts: float | None


class SpoolError(UkedgeError):
    """The spool's database failed or was asked something inconsistent."""


class _OffsetMoved(SpoolError):
    """Another reader stored this part of the file first."""


class _Base(DeclarativeBase):
    pass


class _Stream(_Base):
    """One instance's results file: how far it was read and the next number to hand out."""

    __tablename__ = "streams"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(Integer, default=0)
    next_seq: Mapped[int] = mapped_column(Integer, default=1)


class _Record(_Base):
    __tablename__ = "records"

    instance_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("streams.instance_id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    line: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class _Sink(_Base):
    __tablename__ = "sinks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)


class _Cursor(_Base):
    """Highest ``seq`` of one instance that one sink has acked."""

    __tablename__ = "cursors"

    sink: Mapped[str] = mapped_column(String(255), ForeignKey("sinks.name"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    acked: Mapped[int] = mapped_column(Integer, default=0)


#: Records are read as plain rows, not ORM objects: the forwarder reads every one of them.
_RECORD_COLUMNS = (_Record.instance_id, _Record.seq, _Record.ts, _Record.line, _Record.error)


def _parse(raw: bytes) -> tuple[str, str | None]:
    """The stored text of one line and why it is not valid JSON (``None`` if it is)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", errors="replace"), f"not UTF-8: {exc}"
    try:
        json.loads(text)
    except ValueError as exc:
        return text, f"invalid JSON: {exc}"
    return text, None


def _split(data: bytes) -> tuple[list[tuple[str, str | None]], int]:
    """Complete lines of ``data`` as (text, error) and how many bytes they take.

    Blank lines are consumed but carry nothing, so they get no record.
    """
    lines: list[tuple[str, str | None]] = []
    consumed = 0
    while consumed < len(data):
        end = data.find(b"\n", consumed)
        if end < 0:
            if len(data) - consumed < MAX_LINE_BYTES:
                break  # a line still being written: read it whole next time
            end = consumed + MAX_LINE_BYTES
            piece = data[consumed:end]
            text = piece.decode("utf-8", errors="replace")
            lines.append((text, f"line longer than {MAX_LINE_BYTES} bytes; stored in pieces"))
            consumed = end
            continue
        raw = data[consumed:end].rstrip(b"\r")
        consumed = end + 1
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            for start in range(0, len(raw), MAX_LINE_BYTES):
                text = raw[start : start + MAX_LINE_BYTES].decode("utf-8", errors="replace")
                lines.append((text, f"line longer than {MAX_LINE_BYTES} bytes; stored in pieces"))
            continue
        lines.append(_parse(raw))
    return lines, consumed


class ResultSpool:
    """Durable, numbered result records and per-sink delivery cursors in one SQLite file.

    Safe to share between threads and processes (each call is one transaction). Several
    ``ResultSpool`` objects on the same file see the same state: a restarted agent opens a new
    one and carries on.
    """

    def __init__(self, path: Path, *, keep: int = 1000) -> None:
        """``keep``: acked records per instance that :meth:`prune` leaves for reading."""
        self.path = path
        self.keep = keep
        #: Results-file size at which each instance was last found fully read (a hint only).
        self._known: dict[str, int] = {}
        # Every transaction BEGIN IMMEDIATE (ukedge.sqlite): the forwarder thread and an API
        # thread (or a second process) serialise instead of failing at commit. synchronous=
        # NORMAL: a power cut may lose the last ingest, which the offset then reads again.
        self._db = SQLiteDatabase(
            path,
            what="results spool",
            error=SpoolError,
            wrap=(SQLAlchemyError,),
            synchronous="NORMAL",
            mode=0o700,
        )
        self._db.create_all(_Base.metadata)

    # -- intake ------------------------------------------------------------------------------------

    def offset(self, instance_id: str) -> int:
        """How many bytes of the instance's results file are already in the spool."""
        with self._db.session() as session:
            stream = session.get(_Stream, instance_id)
            return stream.offset if stream else 0

    def ingest(self, instance_id: str, node: str, data: bytes, *, at: int) -> int:
        """Number and store the complete lines of ``data``, read from byte ``at`` of the file.

        ``at`` must be :meth:`offset` (what the caller read from); anything else means two
        readers raced or the caller lost track, and nothing is stored. Returns how many records
        were added. A trailing partial line is left for the next call.
        """
        if not _NODE.match(node):
            raise UsageError(
                f"invalid node name {node!r}: use letters, digits, '_', '.', '-' "
                "(at most 63 characters)"
            )
        lines, consumed = _split(data)
        if consumed == 0:
            return 0
        now = time.time()
        with self._db.session() as session:
            stream = session.get(_Stream, instance_id)
            if stream is None:
                stream = _Stream(instance_id=instance_id, node=node, offset=0, next_seq=1)
                session.add(stream)
            if stream.offset != at:
                raise _OffsetMoved(
                    f"instance {instance_id}: results read from byte {at}, but the spool is at "
                    f"byte {stream.offset}; read again from offset()"
                )
            first = stream.next_seq
            rows = [
                {"instance_id": instance_id, "seq": seq, "ts": now, "line": text, "error": error}
                for seq, (text, error) in enumerate(lines, first)
            ]
            if rows:
                session.execute(insert(_Record), rows)
            for row in rows:
                if row["error"] is not None:
                    log.warning(
                        "instance %s result %d kept as error: %s",
                        instance_id,
                        row["seq"],
                        row["error"],
                    )
            stream.next_seq = first + len(rows)
            stream.offset = at + consumed
        return len(lines)

    def ingest_file(self, instance_id: str, node: str, path: Path) -> int:
        """Read what is new in ``path`` (from the stored offset) into the spool.

        Returns the number of records added; a missing file adds nothing. A file shorter than
        the stored offset is a new file under the old name: it is read from its start.
        """
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        if self._known.get(instance_id) == size:
            # Unchanged since this object last read it (the spool's offset only grows, up to the
            # size): skip the database, so tailing many idle instances costs one stat() each.
            return 0
        added = 0
        while True:
            at = self.offset(instance_id)
            try:
                with path.open("rb") as f:
                    size = f.seek(0, 2)
                    if size < at:
                        log.warning(
                            "results file %s shrank below the spool's offset %d; reading it anew",
                            path,
                            at,
                        )
                        self._reset_offset(instance_id)
                        at = 0
                    if size == at:
                        self._known[instance_id] = size
                        return added
                    f.seek(at)
                    data = f.read(_READ_CHUNK)
            except FileNotFoundError:
                return added
            try:
                added += self.ingest(instance_id, node, data, at=at)
            except _OffsetMoved:
                continue  # another reader (a second agent process) got there first: read on
            if len(data) < _READ_CHUNK:
                # Read to the end; what is left unconsumed is a partial line that can only
                # change by growing the file.
                self._known[instance_id] = at + len(data)
                return added

    def continue_stream(self, instance_id: str, node: str, *, offset: int, next_seq: int) -> None:
        """Take over an instance moved here from another node: its results file (copied along)
        was read there up to ``offset`` and numbered up to ``next_seq - 1``, which that node's
        spool delivers; this one numbers on from ``next_seq``, so the centre sees no gap and no
        number twice. Every sink's cursor starts there too."""
        if offset < 0 or next_seq < 1:
            raise UsageError(f"invalid results position {offset}/{next_seq} for {instance_id}")
        with self._db.session() as session:
            if session.get(_Stream, instance_id) is not None:
                raise SpoolError(
                    f"the spool already has results of instance {instance_id}; it cannot take "
                    "over that instance's numbering"
                )
            session.add(
                _Stream(instance_id=instance_id, node=node, offset=offset, next_seq=next_seq)
            )
            for sink in session.scalars(select(_Sink.name)):
                session.add(_Cursor(sink=sink, instance_id=instance_id, acked=next_seq - 1))
        self._known.pop(instance_id, None)

    def _reset_offset(self, instance_id: str) -> None:
        self._known.pop(instance_id, None)
        with self._db.session() as session:
            stream = session.get(_Stream, instance_id)
            if stream is not None:
                stream.offset = 0

    # -- delivery ----------------------------------------------------------------------------------

    def add_sink(self, name: str) -> None:
        """Register a sink: from now on prune waits for it too. Idempotent."""
        with self._db.session() as session:
            if session.get(_Sink, name) is None:
                session.add(_Sink(name=name))

    def remove_sink(self, name: str) -> None:
        """Forget a sink and its cursors, so records no longer wait for it."""
        with self._db.session() as session:
            session.execute(delete(_Cursor).where(_Cursor.sink == name))
            session.execute(delete(_Sink).where(_Sink.name == name))

    def sinks(self) -> list[str]:
        with self._db.session() as session:
            return sorted(session.scalars(select(_Sink.name)))

    def pending(self, sink: str, limit: int = 256) -> list[ResultRecord]:
        """Records ``sink`` has not acked: at most ``limit`` per instance, by instance and seq.

        The limit is per instance so that one chatty app cannot starve the others.
        """
        with self._db.session() as session:
            if session.get(_Sink, sink) is None:
                raise SpoolError(f"unknown sink {sink!r}; add_sink() it first")
            acked = {
                row.instance_id: row.acked
                for row in session.execute(
                    select(_Cursor.instance_id, _Cursor.acked).where(_Cursor.sink == sink)
                )
            }
            out: list[ResultRecord] = []
            for stream in session.scalars(select(_Stream).order_by(_Stream.instance_id)):
                after = acked.get(stream.instance_id, 0)
                if after >= stream.next_seq - 1:
                    continue
                rows = session.execute(
                    select(*_RECORD_COLUMNS)
                    .where(_Record.instance_id == stream.instance_id, _Record.seq > after)
                    .order_by(_Record.seq)
                    .limit(limit)
                )
                out.extend(
                    ResultRecord(r.instance_id, stream.node, r.seq, r.ts, r.line, r.error)
                    for r in rows
                )
            return out

    def ack(self, sink: str, instance_id: str, up_to_seq: int) -> None:
        """Record that ``sink`` has every record of the instance up to ``up_to_seq``.

        A cursor only moves forward (a late, smaller ack changes nothing).
        """
        with self._db.session() as session:
            if session.get(_Sink, sink) is None:
                raise SpoolError(f"unknown sink {sink!r}; add_sink() it first")
            stream = session.get(_Stream, instance_id)
            if stream is None or up_to_seq >= stream.next_seq:
                last = stream.next_seq - 1 if stream else 0
                raise SpoolError(
                    f"sink {sink!r} acked seq {up_to_seq} of instance {instance_id}, "
                    f"but the spool has only numbered up to {last}"
                )
            cursor = session.get(_Cursor, (sink, instance_id))
            if cursor is None:
                session.add(_Cursor(sink=sink, instance_id=instance_id, acked=up_to_seq))
            elif up_to_seq > cursor.acked:
                cursor.acked = up_to_seq

    def acked(self, sink: str, instance_id: str) -> int:
        with self._db.session() as session:
            cursor = session.get(_Cursor, (sink, instance_id))
            return cursor.acked if cursor else 0

    # -- reading and housekeeping ------------------------------------------------------------------

    def records(self, instance_id: str, after: int = 0, limit: int = 1000) -> list[ResultRecord]:
        """Stored records of one instance with ``seq > after``, oldest first."""
        with self._db.session() as session:
            stream = session.get(_Stream, instance_id)
            if stream is None:
                return []
            rows = session.execute(
                select(*_RECORD_COLUMNS)
                .where(_Record.instance_id == instance_id, _Record.seq > after)
                .order_by(_Record.seq)
                .limit(limit)
            )
            return [
                ResultRecord(r.instance_id, stream.node, r.seq, r.ts, r.line, r.error) for r in rows
            ]

    def backlog(self) -> dict[str, Backlog]:
        """Each registered sink's undelivered records: what a sink that is down holds back."""
        with self._db.session() as session:
            sinks = list(session.scalars(select(_Sink.name)))
            streams = list(session.execute(select(_Stream.instance_id, _Stream.next_seq)))
            out: dict[str, Backlog] = {}
            for sink in sinks:
                acked = {
                    row.instance_id: row.acked
                    for row in session.execute(
                        select(_Cursor.instance_id, _Cursor.acked).where(_Cursor.sink == sink)
                    )
                }
                records = 0
                oldest: float | None = None
                for stream in streams:
                    after = acked.get(stream.instance_id, 0)
                    if after >= stream.next_seq - 1:
                        continue
                    records += stream.next_seq - 1 - after
                    ts = session.scalar(
                        select(_Record.ts).where(
                            _Record.instance_id == stream.instance_id, _Record.seq == after + 1
                        )
                    )
                    if ts is not None and (oldest is None or ts < oldest):
                        oldest = ts
                out[sink] = Backlog(records, oldest)
            return out

    def last_seq(self, instance_id: str) -> int:
        with self._db.session() as session:
            stream = session.get(_Stream, instance_id)
            return stream.next_seq - 1 if stream else 0

    def prune(self) -> int:
        """Delete records every registered sink has acked, keeping the last ``keep`` per
        instance; returns how many went. With no sink registered nothing waits for delivery,
        so only the tail is kept."""
        removed = 0
        with self._db.session() as session:
            sinks = list(session.scalars(select(_Sink.name)))
            for stream in session.scalars(select(_Stream)):
                limit = stream.next_seq - 1 - self.keep
                if sinks:
                    cursors = self._cursors(session, stream.instance_id)
                    limit = min([limit, *(cursors.get(s, 0) for s in sinks)])
                if limit <= 0:
                    continue
                result = session.execute(
                    delete(_Record).where(
                        _Record.instance_id == stream.instance_id, _Record.seq <= limit
                    )
                )
                removed += int(getattr(result, "rowcount", 0) or 0)
        return removed

    def forget_delivered(self, live: Collection[str]) -> list[str]:
        """Forget the streams of instances not in ``live`` (removed) once every registered sink
        has acked their last record; returns their ids. Without this a node that runs many
        short-lived instances would keep each one's tail of records for ever."""
        done = []
        with self._db.session() as session:
            sinks = list(session.scalars(select(_Sink.name)))
            for stream in session.scalars(select(_Stream)):
                if stream.instance_id in live:
                    continue
                cursors = self._cursors(session, stream.instance_id)
                if all(cursors.get(sink, 0) >= stream.next_seq - 1 for sink in sinks):
                    done.append(stream.instance_id)
        for instance_id in done:
            self.forget(instance_id)
        return done

    @staticmethod
    def _cursors(session: Session, instance_id: str) -> dict[str, int]:
        """How far each sink has acked the instance's records."""
        rows = session.execute(
            select(_Cursor.sink, _Cursor.acked).where(_Cursor.instance_id == instance_id)
        )
        return {row.sink: row.acked for row in rows}

    def forget(self, instance_id: str) -> None:
        """Drop an instance's stream, records and cursors (its results file is gone for good)."""
        with self._db.session() as session:
            session.execute(delete(_Record).where(_Record.instance_id == instance_id))
            session.execute(delete(_Cursor).where(_Cursor.instance_id == instance_id))
            session.execute(delete(_Stream).where(_Stream.instance_id == instance_id))
        self._known.pop(instance_id, None)

    def close(self) -> None:
        self._db.close()
