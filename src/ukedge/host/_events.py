"""Fan-out of instance events to whoever follows them: in one process and across processes.

The manager calls :meth:`EventBus.publish` from whichever thread changed a record; each
subscriber has its own bounded queue, so a slow reader loses its oldest events (and is told how
many) instead of slowing the manager or growing without bound. That serves the agent, whose
process makes every change of its node.

Without an agent every ``ukedge`` command is its own process: ``ukedge events`` in one shell
must see what ``ukedge run`` does in another. So every manager also appends its events to the
node's :class:`EventJournal`, a JSON-lines file beside the instance records, which
``ukedge events`` follows as ``tail -F`` would.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ukedge.host._models import InstanceEvent

__all__ = ["EventBus", "EventJournal", "Subscription"]

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[InstanceEvent] = queue.Queue(maxsize)
        #: Events dropped because this subscriber fell behind.
        self.dropped = 0

    def _offer(self, event: InstanceEvent) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> InstanceEvent | None:
        """The next event, or ``None`` when none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        subscription = Subscription(self, maxsize)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, event: InstanceEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription._offer(event)
        log.info(
            "instance %s %s: %s",
            event.name,
            event.action,
            event.state.value,
            extra={"instance": event.id, "action": event.action, "state": event.state.value},
        )

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)


class EventJournal:
    """The node's events as JSON lines, appended by every process that changes an instance.

    One ``write`` per line on an ``O_APPEND`` descriptor under an exclusive ``flock``, so lines
    of concurrent writers never interleave. Past ``max_bytes`` the file is renamed to ``.1``
    (one older generation kept) and a new one begun: the journal is for following, not an
    archive.
    """

    def __init__(self, path: Path, *, max_bytes: int = 1 << 20, poll_s: float = 0.1) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.poll_s = poll_s

    def append(self, event: InstanceEvent) -> None:
        line = (event.model_dump_json() + "\n").encode()
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not self._names(fd):
                    continue  # another writer rotated it while we waited: open the new one
                if os.fstat(fd).st_size + len(line) > self.max_bytes:
                    self.path.replace(self.path.with_name(self.path.name + ".1"))
                    continue
                os.write(fd, line)
                return
            finally:
                os.close(fd)

    def _names(self, fd: int) -> bool:
        """Whether the journal's name still leads to the file open as ``fd``."""
        try:
            return self.path.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def follow(self, stop: threading.Event | None = None) -> Iterator[InstanceEvent]:
        """Events appended after this call, from any process, until ``stop`` is set.

        The position is taken before this returns, so every later event is seen; a rotation
        is noticed by the file's inode, the rest of the old file read first (and the kept
        older file too, when the journal turned over twice between two reads). A follower
        that falls behind by more than that loses the events in between, as a slow
        subscriber of the bus does.
        """
        return self._read(self._open_at_end(), stop)

    def _read(
        self, handle: BinaryIO | None, stop: threading.Event | None
    ) -> Iterator[InstanceEvent]:
        pending = b""
        try:
            while stop is None or not stop.is_set():
                chunk = handle.read() if handle else b""
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line:
                            yield InstanceEvent.model_validate_json(line)
                    continue
                if self._rotated(handle):
                    handle = self._next_file(handle)
                    pending = b""
                    continue
                time.sleep(self.poll_s)
        finally:
            if handle:
                handle.close()

    def _next_file(self, handle: BinaryIO | None) -> BinaryIO | None:
        """After a rotation: the kept older file if it is not the one just read to its end
        (two rotations happened), else the current one; every line in either is new."""
        older = self.path.with_name(self.path.name + ".1")
        try:
            skipped = handle is not None and older.stat().st_ino != os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            skipped = False
        if handle:
            handle.close()
        if skipped:
            with contextlib.suppress(FileNotFoundError):
                return older.open("rb")
        return self._open()

    def _open_at_end(self) -> BinaryIO | None:
        handle = self._open()
        if handle:
            handle.seek(0, os.SEEK_END)
        return handle

    def _open(self) -> BinaryIO | None:
        try:
            return self.path.open("rb")
        except FileNotFoundError:
            return None  # nothing happened on this node yet: wait for the file

    def _rotated(self, handle: BinaryIO | None) -> bool:
        """Whether the journal's name now leads to another file than ``handle`` reads."""
        if handle is None:
            return self.path.exists()
        return not self._names(handle.fileno())
