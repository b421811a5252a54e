"""The migration protocol between two agents: frames, the steps of a move, and tickets.

Pure logic only (no sockets, no clock of its own), so each rule is unit-tested.

A move is driven by the source agent. It first needs an *offer* from the target agent, got over
the target's authenticated REST API: the port of the target's migration listener, the SHA-256
of the certificate that listener presents (the source pins it, as a join token pins the
controller's) and a one-time *ticket*. The source then opens TLS to that listener and speaks
frames (a 4-byte length, a JSON header, an optional binary payload of ``header["size"]``
bytes)::

    source                                    target
    hello {ticket, migration, mode, instance, ports}  ──►  checks ticket, image, room, ports
                                              ◄──  accept {have: {file: bytes received}}
    file {name, offset, raw, size} + zlib chunk  ──►  (repeated; a reconnect with the same
                                                      ticket resumes from ``have``)
    restore {files: {name: sha256}, spool}     ──►  verifies, boots/resumes the machine
                                              ◄──  running {ports}
    commit                                     ──►  records the instance (the commit point)
                                              ◄──  committed {instance}
    abort {reason}                             ──►  kills what it started, forgets it

A live move replaces the state files by QEMU's own stream: ``live-start`` (the target starts a
machine waiting on its incoming Unix socket and answers ``live-ready``), ``live`` frames (the
stream, chunk by chunk, as the source's QEMU writes it while the guest runs), ``live-end``;
then the results and console files, ``restore`` (the target lets its loaded machine run) and
the commit as above. A post-copy live move (``live-start {postcopy: true}``) also opens a second
connection with the same ticket for QEMU's return path: ``hello {…, back: 1}`` ◄── ``back-ready``,
then ``live-back`` frames from the target (the bytes its QEMU wrote back, raw) until the stream
ends; from the source's ``postcopy`` step on, a failure no longer resumes the source. Once QEMU
has switched, the source sends the results and console files and ``restore`` between the
``live`` frames; the target runs its guest as soon as its QEMU has loaded the device state and
answers ``running`` on the second connection, the source sends ``commit``, the target answers
``committed`` there too (after the switch the target writes only on the second connection),
and the rest of the RAM goes on until ``live-end``.

Either side answers a refusal with ``error {step, message}``. The source removes its own
instance only after ``committed``; before it, every failure (or a cancel) resumes the source.
A connection lost between ``commit`` and ``committed`` is the one moment the source cannot tell
the outcome: it reconnects with the same ticket and asks (``hello`` again: the target answers
``committed`` when it had committed).
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ukedge.errors import MigrationError, StateError

__all__ = [
    "CHUNK_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Frame",
    "Mode",
    "MoveState",
    "Step",
    "TicketBook",
    "decode_chunk",
    "encode_chunk",
    "encode_frame",
    "parse_header",
]

#: Raw bytes of guest state per chunk: small enough to resume cheaply, big enough for zlib.
CHUNK_BYTES = 1 << 20
MAX_HEADER_BYTES = 1 << 20
#: A compressed chunk is at most a little larger than its raw bytes.
MAX_PAYLOAD_BYTES = CHUNK_BYTES + (1 << 16)
_LENGTH = struct.Struct("!I")


class Mode(enum.StrEnum):
    """How an instance moves."""

    #: Boot a new machine on the target, wait until it is healthy, then stop the source.
    COLD = "cold"
    #: Pause, save device state and RAM, stream it, resume it on the target.
    SNAPSHOT = "snapshot"
    #: QEMU pre-copy migration while the guest runs, carried over the same channel.
    LIVE = "live"


class Step(enum.StrEnum):
    """Where a move is; ``done``, ``failed`` and ``cancelled`` are final."""

    PREPARE = "prepare"
    CONNECT = "connect"
    FREEZE = "freeze"
    TRANSFER = "transfer"
    #: Live moves with post-copy only: the guest runs on from the target's memory, the source's
    #: is no longer whole; a failure from here on loses the instance on both sides.
    POSTCOPY = "postcopy"
    RESTORE = "restore"
    COMMIT = "commit"
    CLEANUP = "cleanup"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (Step.DONE, Step.FAILED, Step.CANCELLED)


_NEXT: dict[Mode, tuple[Step, ...]] = {
    Mode.SNAPSHOT: (
        Step.PREPARE,
        Step.CONNECT,
        Step.FREEZE,
        Step.TRANSFER,
        Step.RESTORE,
        Step.COMMIT,
        Step.CLEANUP,
        Step.DONE,
    ),
    Mode.COLD: (Step.PREPARE, Step.CONNECT, Step.RESTORE, Step.COMMIT, Step.CLEANUP, Step.DONE),
    Mode.LIVE: (
        Step.PREPARE,
        Step.CONNECT,
        Step.TRANSFER,
        Step.POSTCOPY,
        Step.RESTORE,
        Step.COMMIT,
        Step.CLEANUP,
        Step.DONE,
    ),
}
#: Steps a move of that mode may pass over (post-copy is a live move's option).
_OPTIONAL = frozenset({Step.POSTCOPY})


@dataclass
class MoveState:
    """The source's view of one move: its steps in order, and how it ended.

    Until the target has committed, a move may fail or be cancelled, and the source runs on;
    from ``commit`` on, the target owns the instance and only the source's clean-up is left.
    A post-copy move that reached ``postcopy`` can no longer give the source back either: it is
    not cancellable, and a failure there loses the instance (``lost``).
    """

    mode: Mode
    step: Step = Step.PREPARE
    error: str | None = None
    failed_step: Step | None = None
    committed: bool = False
    history: list[tuple[Step, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in _NEXT:
            raise MigrationError(f"migration mode {self.mode.value!r} is not supported yet")

    def advance(self, step: Step, now: float) -> None:
        """Move on to ``step``, which must be the next one of this mode."""
        order = _NEXT[self.mode]
        if self.step.final or step not in order:
            raise StateError(self.step.value, f"the step before {step.value}")
        skipped = order[order.index(self.step) + 1 : order.index(step)]
        if order.index(step) <= order.index(self.step) or not set(skipped) <= _OPTIONAL:
            raise StateError(self.step.value, f"the step before {step.value}")
        if self.step is Step.COMMIT:
            self.committed = True
        self.step = step
        self.history.append((step, now))

    def confirm_commit(self) -> None:
        """The target answered ``committed``: the instance is the target's from now on."""
        if self.step is not Step.COMMIT:
            raise StateError(self.step.value, Step.COMMIT.value)
        self.committed = True

    @property
    def postcopy(self) -> bool:
        """Post-copy started: the source no longer holds the whole guest."""
        return any(step is Step.POSTCOPY for step, _ in self.history)

    @property
    def lost(self) -> bool:
        """Failed after post-copy started: neither side has the whole guest."""
        return self.step is Step.FAILED and self.postcopy

    @property
    def cancellable(self) -> bool:
        return not self.step.final and not self.committed and not self.postcopy

    def fail(self, error: str, now: float) -> None:
        """End the move as failed at the current step (a failure after the commit is the
        source's clean-up only: the move itself is done, the error says what was left)."""
        if self.step.final:
            raise StateError(self.step.value, "an unfinished move")
        self.error = error
        self.failed_step = self.step
        self.step = Step.DONE if self.committed else Step.FAILED
        self.history.append((self.step, now))

    def cancel(self, now: float) -> None:
        if not self.cancellable:
            raise MigrationError(
                f"the move is {'committed' if self.committed else self.step.value}; "
                "it can no longer be cancelled",
                self.step.value,
            )
        self.failed_step = self.step
        self.error = f"cancelled during {self.step.value}"
        self.step = Step.CANCELLED
        self.history.append((self.step, now))


# -- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    payload: bytes = b""

    @property
    def kind(self) -> str:
        return str(self.header.get("kind", ""))


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame: length, JSON header (with ``size`` set to the payload's length), payload."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MigrationError(f"frame payload of {len(payload)} bytes is over the limit")
    body = json.dumps({**header, "size": len(payload)}, separators=(",", ":")).encode()
    if len(body) > MAX_HEADER_BYTES:
        raise MigrationError(f"frame header of {len(body)} bytes is over the limit")
    return _LENGTH.pack(len(body)) + body + payload


def parse_header(read_exact: Callable[[int], bytes]) -> Frame:
    """Read one frame with ``read_exact(n)`` (which returns exactly n bytes or raises)."""
    (length,) = _LENGTH.unpack(read_exact(_LENGTH.size))
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise MigrationError(f"peer sent a frame header of {length} bytes; not this protocol")
    try:
        header = json.loads(read_exact(length))
    except ValueError as exc:
        raise MigrationError(f"peer sent a header that is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise MigrationError("peer sent a header without a kind; not this protocol")
    size = header.get("size", 0)
    if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD_BYTES:
        raise MigrationError(f"peer announced a payload of {size!r} bytes; over the limit")
    return Frame(header, read_exact(size) if size else b"")


def encode_chunk(raw: bytes, level: int) -> bytes:
    """Compress one chunk on its own (level 0: stored), so a resume starts at any chunk."""
    return zlib.compress(raw, level) if level else raw


def decode_chunk(data: bytes, raw_size: int, compressed: bool) -> bytes:
    if not compressed:
        raw = data
    else:
        try:
            unpacker = zlib.decompressobj()
            raw = unpacker.decompress(data, raw_size + 1)
        except zlib.error as exc:
            raise MigrationError(f"a chunk does not decompress: {exc}", "transfer") from None
    if len(raw) != raw_size:
        raise MigrationError(
            f"a chunk unpacked to {len(raw)} bytes, its header says {raw_size}", "transfer"
        )
    return raw


# -- tickets -----------------------------------------------------------------------------------


@dataclass
class _Ticket:
    expires_at: float
    migration: str | None = None


class TicketBook:
    """One-time tickets the target hands out over its authenticated API.

    A ticket admits one move: the first ``hello`` binds it to that move's id, and only the same
    move may reconnect with it (to resume a transfer, or ask whether a commit went through).
    Unused tickets expire ``ttl_s`` after issue, used ones ``hold_s`` after their first use;
    only their SHA-256 is kept.
    """

    def __init__(
        self,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        hold_s: float = 3600.0,
    ) -> None:
        self.ttl_s = ttl_s
        #: How long a ticket bound to a move stays good (for its reconnects).
        self.hold_s = hold_s
        self._clock = clock
        self._tickets: dict[str, _Ticket] = {}

    @staticmethod
    def _key(ticket: str) -> str:
        return hashlib.sha256(ticket.encode()).hexdigest()

    def issue(self) -> str:
        self._expire()
        ticket = secrets.token_urlsafe(32)
        self._tickets[self._key(ticket)] = _Ticket(self._clock() + self.ttl_s)
        return ticket

    def redeem(self, ticket: str, migration: str) -> None:
        """Admit ``migration`` with ``ticket``; MigrationError saying why not."""
        self._expire()
        entry = self._tickets.get(self._key(ticket))
        if entry is None:
            raise MigrationError(
                "the migration ticket is unknown or has expired; ask the target for a new "
                "offer (tickets are used once and last a few minutes)",
                "connect",
            )
        if entry.migration is not None and entry.migration != migration:
            raise MigrationError("the migration ticket was already used by another move", "connect")
        if entry.migration is None:
            entry.migration = migration
            entry.expires_at = self._clock() + self.hold_s

    def release(self, ticket: str) -> None:
        """The move is over: the ticket admits nobody again."""
        self._tickets.pop(self._key(ticket), None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._tickets.items() if t.expires_at < now]:
            del self._tickets[key]

    def __len__(self) -> int:
        return len(self._tickets)
