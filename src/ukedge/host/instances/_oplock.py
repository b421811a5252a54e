"""Which instances an operation is under way for, visible to every process on the node.

A start writes ``starting`` before it boots the machine and ``running`` with the machine's pid
after; a stop writes ``stopping`` before it asks the guest to end. A process that dies in
between (kill -9, OOM, power cut) leaves the record in that transitional state, and nothing in
the record tells a dead starter from one still booting. So the operation holds an exclusive
``flock`` on ``<workdir>/op.lock`` from before it writes the transitional state until it has
written the next one. The kernel drops the lock with its holder: a transitional record whose
lock is free was abandoned, and whoever reads it next (the restarted agent's first supervise
pass) finishes the operation (:meth:`InstanceManager._recover`).

The lock belongs to an open file, not to a process: a thread of the holder's own process
that probes it sees it taken, as it should, and the holder must not take it a second time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["abandoned", "holding"]

LOCK_NAME = "op.lock"


def abandoned(workdir: Path) -> bool:
    """True when no process holds the operation lock of the instance in ``workdir``."""
    try:
        fd = os.open(workdir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # never locked, or the instance is being removed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases the probe's own hold
    return True


@contextlib.contextmanager
def holding(workdir: Path) -> Iterator[None]:
    """Hold the operation lock of the instance in ``workdir`` (waiting for another process's
    operation on it to finish first)."""
    fd = os.open(workdir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
