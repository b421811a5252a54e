"""SQLite set-up for every ukedge store, in one place.

Each store (instance records, the results spool, the image usage table, the hub's metadata, the
controller's state) is one SQLite file shared by threads of one process and by several
processes (the CLI beside the agent, two hub workers). They all need the same three things, and
got them subtly differently when each wrote its own:

* **WAL**, so readers never wait for a writer and a crash leaves the last committed state;
* a **busy timeout**, so a second writer waits for the lock instead of failing at once;
* **``BEGIN IMMEDIATE``** for every transaction that may write: a deferred transaction that reads
  and then writes has to upgrade its lock at the first write, and when two do so at once SQLite
  fails one with "database is locked" at once (the busy timeout cannot help: waiting would
  deadlock). Taking the write lock at ``BEGIN`` makes check-then-write sequences (admission,
  a manifest PUT checking its blobs, the GC's sweep) serialise instead, across processes too.

Plus foreign keys on, so a schema's ``ForeignKey`` is a constraint and not a comment.

The durability of a commit is each store's choice: ``synchronous=FULL`` (the default) makes a
commit survive a power cut; ``NORMAL`` (WAL's usual setting) keeps the file consistent but may
lose the last commits to a power cut, which suits data that is re-derived or re-delivered.

Why SQLAlchemy and not raw :mod:`sqlite3`: three of the four stores already use it (the ORM for
instance records and the spool, Core for the hub), the controller is written against it so that
the same code runs on PostgreSQL at scale, and its pool keeps connections open for the life of
the store (closing the last connection to a WAL file checkpoints it, which would make every
small write cost a checkpoint). Only the set-up here is SQLite's; the stores' queries stay
portable. The ``connect`` event switches off :mod:`sqlite3`'s own transaction handling so that
the ``begin`` event decides how each transaction starts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from ukedge.errors import UkedgeError

__all__ = ["SQLiteDatabase"]


class SQLiteDatabase:
    """One SQLite file: write transactions (``BEGIN IMMEDIATE``), read snapshots, ORM sessions.

    ``what`` names the store in error messages ("results spool"). When ``error`` is given, the
    exceptions in ``wrap`` (by default :class:`OperationalError`: locked past the busy timeout,
    disk full, not a database) are re-raised as ``error`` naming the store and its file; other
    errors, such as an :class:`~sqlalchemy.exc.IntegrityError` a caller turns into its own
    message, pass through.
    """

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        error: type[UkedgeError] | None = None,
        wrap: tuple[type[Exception], ...] = (OperationalError,),
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = 10.0,
        foreign_keys: bool = True,
        pool_size: int = 5,
        max_overflow: int = 10,
        mode: int = 0o777,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._error = error
        self._wrap = wrap
        self._settings = {
            "synchronous": synchronous,
            "busy_timeout": busy_timeout,
            "foreign_keys": foreign_keys,
            "pool_size": pool_size,
            "max_overflow": max_overflow,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=mode)
        self.engine = self._engine("BEGIN IMMEDIATE")
        self._reader: Engine | None = None

    def _engine(self, begin: str) -> Engine:
        settings = self._settings
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": settings["busy_timeout"]},
            pool_size=settings["pool_size"],
            max_overflow=settings["max_overflow"],
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi: sqlite3.Connection, _record: Any) -> None:
            dbapi.isolation_level = None  # the "begin" event below issues BEGIN
            cursor = dbapi.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={settings['synchronous']}")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if settings['foreign_keys'] else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={int(float(settings['busy_timeout']) * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

        return engine

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        if self._error is None:
            yield
            return
        try:
            yield
        except self._wrap as exc:
            cause = getattr(exc, "orig", None) or exc
            raise self._error(f"{self.what} {self.path}: {cause}") from exc

    def create_all(self, metadata: MetaData) -> None:
        """Create the tables ``metadata`` describes that do not exist yet (one transaction)."""
        try:
            with self.engine.begin() as connection:
                metadata.create_all(connection)
        except SQLAlchemyError as exc:
            if self._error is None:
                raise
            raise self._error(f"cannot open {self.what} {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One serialised write transaction: commits on success, rolls back on any error."""
        with self._errors(), self.engine.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot (a deferred transaction); in WAL it never waits for writers."""
        if self._reader is None:
            self._reader = self._engine("BEGIN")
        with self._errors(), self._reader.connect() as connection:
            try:
                yield connection
            finally:
                connection.rollback()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session in one write transaction, committed when the block ends without error."""
        with self._errors(), Session(self.engine) as session, session.begin():
            yield session

    def close(self) -> None:
        """Close the pooled connections (the file stays; a later use reconnects)."""
        self.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()
