"""One SQLite file through SQLAlchemy: write transactions, read snapshots, ORM sessions.

For the stores whose code is SQLAlchemy's (the hub's metadata through Core, the results spool
through the ORM, the controller, which also runs on PostgreSQL): the set-up of
:mod:`ukedge.sqlite._setup` runs in the ``connect`` event, which switches off :mod:`sqlite3`'s
own transaction handling so that the ``begin`` event decides how each transaction starts.
Its pool keeps connections open for the life of the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from ukedge.errors import UkedgeError
from ukedge.sqlite._setup import Settings, Synchronous, configure

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
        synchronous: Synchronous = "FULL",
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
        self._settings = Settings(synchronous, busy_timeout, foreign_keys)
        self._pool = {"pool_size": pool_size, "max_overflow": max_overflow}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=mode)
        self.engine = self._engine("BEGIN IMMEDIATE")
        self._reader: Engine | None = None

    def _engine(self, begin: str) -> Engine:
        settings = self._settings
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": settings.busy_timeout},
            **self._pool,
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi: sqlite3.Connection, _record: Any) -> None:
            configure(dbapi, settings)  # the "begin" event below issues BEGIN

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
