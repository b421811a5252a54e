"""One SQLite file through the standard library: write transactions, read snapshots, a schema.

The stdlib twin of :class:`~ukedge.sqlite.SQLiteDatabase` for the stores the CLI opens on every
local command; the same settings (:mod:`ukedge.sqlite._setup`), the same transactions: every
:meth:`SQLiteFile.write` is ``BEGIN IMMEDIATE`` and commits when its block ends without error
(rolls back otherwise), every :meth:`SQLiteFile.read` a deferred snapshot that never waits for a
writer. A crash mid-block leaves the last committed state (SQLite's journal); nothing here
writes outside a transaction.

Threads share one object: each block takes an idle connection from a small pool (opening one if
none is idle) and puts it back after, so connections stay open for the life of the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ukedge.errors import UkedgeError
from ukedge.sqlite._setup import Settings, Synchronous, connect

__all__ = ["SQLiteFile"]


class SQLiteFile:
    """``what`` names the store in error messages ("instance records"). When ``error`` is given,
    :class:`sqlite3.OperationalError` (locked past the busy timeout, disk full, I/O) is re-raised
    as ``error`` naming the store and its file; other errors, such as an
    :class:`sqlite3.IntegrityError` a caller turns into its own message, pass through.
    """

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        error: type[UkedgeError] | None = None,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 10.0,
        foreign_keys: bool = True,
        pool_size: int = 5,
        mode: int = 0o777,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._error = error
        self._settings = Settings(synchronous, busy_timeout, foreign_keys)
        self._pool_size = pool_size
        self._idle: list[sqlite3.Connection] = []
        #: Bumped by close(): a connection taken before it is closed when given back.
        self._generation = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=mode)

    def create(self, schema: Iterable[str]) -> None:
        """Run ``CREATE … IF NOT EXISTS`` statements in one transaction (a new file gets all of
        them or none); a file that cannot be opened as a database is ``error`` at once."""
        try:
            with self._transaction("BEGIN IMMEDIATE") as connection:
                for statement in schema:
                    connection.execute(statement)
        except sqlite3.Error as exc:
            if self._error is None:
                raise
            raise self._error(f"cannot open {self.what} {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction: commits on success, rolls back on any error."""
        with self._errors(), self._transaction("BEGIN IMMEDIATE") as connection:
            yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read-only snapshot (a deferred transaction); in WAL it never waits for writers."""
        with self._errors(), self._transaction("BEGIN", commit=False) as connection:
            yield connection

    def close(self) -> None:
        """Close the idle connections (the file stays; a later use reconnects)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for connection in idle:
            connection.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        if self._error is None:
            yield
            return
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise self._error(f"{self.what} {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, begin: str, *, commit: bool = True) -> Iterator[sqlite3.Connection]:
        connection, generation = self._take()
        healthy = False
        try:
            connection.execute(begin)
            try:
                yield connection
                if commit:
                    connection.execute("COMMIT")
            finally:
                # After an error, or a read, or a COMMIT that failed (SQLite may have rolled the
                # transaction back itself already).
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            healthy = True
        finally:
            self._give_back(connection, generation, healthy)

    def _take(self) -> tuple[sqlite3.Connection, int]:
        with self._lock:
            generation = self._generation
            if self._idle:
                return self._idle.pop(), generation
        return connect(self.path, self._settings), generation

    def _give_back(self, connection: sqlite3.Connection, generation: int, healthy: bool) -> None:
        # A connection whose rollback failed, taken before close(), or beyond the pool's size
        # is closed; a healthy one that saw an error in the caller's block (rolled back) is
        # reused.
        if healthy or not connection.in_transaction:
            with self._lock:
                if generation == self._generation and len(self._idle) < self._pool_size:
                    self._idle.append(connection)
                    return
        connection.close()
