"""The connection settings every ukedge SQLite store shares, applied in one place.

Both front ends (:mod:`sqlite3` directly, and SQLAlchemy's ``connect`` event) call
:func:`configure` on each new connection, so a pragma changed here changes every store.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Settings", "Synchronous", "configure", "connect"]

#: ``FULL``: a commit survives a power cut; ``NORMAL``: the file stays consistent but the last
#: commits may be lost to one (WAL syncs at checkpoints only).
Synchronous = Literal["FULL", "NORMAL"]


@dataclass(frozen=True)
class Settings:
    synchronous: Synchronous = "FULL"
    #: Seconds a connection waits for another's lock before "database is locked".
    busy_timeout: float = 10.0
    foreign_keys: bool = True


def configure(connection: sqlite3.Connection, settings: Settings) -> None:
    """Put a new connection in WAL with the store's durability, foreign keys and busy timeout,
    with :mod:`sqlite3`'s implicit transactions off (the caller issues ``BEGIN``)."""
    connection.isolation_level = None
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(settings.busy_timeout * 1000)}")
        _enter_wal(cursor, settings.busy_timeout)
        cursor.execute(f"PRAGMA synchronous={settings.synchronous}")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if settings.foreign_keys else 'OFF'}")
    finally:
        cursor.close()


def _enter_wal(cursor: sqlite3.Cursor, timeout: float) -> None:
    # SQLite answers "database is locked" at once, without its busy handler, when another
    # process is switching a new file to WAL or running WAL recovery at the same moment (two
    # CLI commands started together on a fresh node did). Wait here as the busy timeout would.
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def connect(path: Path, settings: Settings) -> sqlite3.Connection:
    """A configured connection to ``path`` that any thread may use (one at a time)."""
    connection = sqlite3.connect(
        path, timeout=settings.busy_timeout, check_same_thread=False, isolation_level=None
    )
    try:
        configure(connection, settings)
    except BaseException:
        connection.close()
        raise
    return connection
