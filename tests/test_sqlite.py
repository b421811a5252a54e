"""The shared SQLite set-up, through SQLAlchemy and through sqlite3: pragmas, serialised
read-modify-write, snapshots, error mapping."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select, text
from sqlalchemy.exc import IntegrityError

from ukedge.errors import UkedgeError
from ukedge.sqlite import SQLiteDatabase, SQLiteFile

_metadata = MetaData()
_counter = Table(
    "counter", _metadata, Column("id", Integer, primary_key=True), Column("n", Integer)
)


class _StoreError(UkedgeError):
    pass


def _open(path: Path, **kwargs: Any) -> SQLiteDatabase:
    db = SQLiteDatabase(path, what="test store", error=_StoreError, **kwargs)
    db.create_all(_metadata)
    return db


def test_connections_get_wal_busy_timeout_foreign_keys_and_durability(tmp_path: Path) -> None:
    db = _open(tmp_path / "s.db", synchronous="NORMAL", busy_timeout=2.5)
    with db.write() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    db.close()
    full = _open(tmp_path / "f.db", foreign_keys=False)
    with full.read() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    full.close()


def test_read_modify_write_from_many_connections_loses_no_update(tmp_path: Path) -> None:
    """Separate engines stand for separate processes; a deferred BEGIN would fail some with
    "database is locked" at their first write, BEGIN IMMEDIATE makes them queue."""
    path = tmp_path / "s.db"
    first = _open(path)
    with first.write() as conn:
        conn.execute(_counter.insert().values(id=1, n=0))
    stores = [first, *(_open(path) for _ in range(3))]
    errors: list[BaseException] = []

    def bump(db: SQLiteDatabase) -> None:
        try:
            for _ in range(25):
                with db.write() as conn:
                    n = conn.execute(select(_counter.c.n).where(_counter.c.id == 1)).scalar_one()
                    conn.execute(_counter.update().where(_counter.c.id == 1).values(n=n + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(db,)) for db in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with first.read() as conn:
        assert conn.execute(select(_counter.c.n)).scalar_one() == 25 * len(threads)
    for db in stores:
        db.close()


def test_a_failed_block_rolls_back_and_other_errors_pass_through(tmp_path: Path) -> None:
    db = _open(tmp_path / "s.db")
    with db.write() as conn:
        conn.execute(_counter.insert().values(id=1, n=1))
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.execute(_counter.update().values(n=5))
        conn.execute(_counter.insert().values(id=1, n=2))  # duplicate key
    with db.read() as conn:
        assert conn.execute(select(_counter.c.n)).scalar_one() == 1
    db.close()


def test_a_lock_held_past_the_busy_timeout_is_the_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = _open(path, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        locked = r"test store .*s\.db: database is locked"
        with pytest.raises(_StoreError, match=locked), db.write() as conn:
            conn.execute(text("SELECT 1"))
        # A reader is not held up by the writer (WAL, deferred BEGIN).
        with db.read() as conn:
            assert conn.execute(select(_counter.c.n)).all() == []
    finally:
        other.execute("ROLLBACK")
        other.close()
    db.close()


def test_a_file_that_is_not_a_database_is_the_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(_StoreError, match=r"cannot open test store"):
        _open(path)


# -- the stdlib front end (SQLiteFile): the same settings and transactions ---------------------

_COUNTER = ("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER)",)


def _file(path: Path, **kwargs: Any) -> SQLiteFile:
    db = SQLiteFile(path, what="test store", error=_StoreError, **kwargs)
    db.create(_COUNTER)
    return db


def _pragmas(conn: sqlite3.Connection) -> tuple[object, ...]:
    names = ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
    return tuple(conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names)


def test_both_front_ends_set_up_connections_alike(tmp_path: Path) -> None:
    settings = {"synchronous": "NORMAL", "busy_timeout": 2.5, "foreign_keys": False}
    stdlib = _file(tmp_path / "a.db", **settings)
    engine = _open(tmp_path / "b.db", **settings)
    with stdlib.write() as conn:
        assert _pragmas(conn) == ("wal", 0, 1, 2500)
    with engine.read() as conn:
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        assert _pragmas(raw) == ("wal", 0, 1, 2500)
    stdlib.close()
    engine.close()
    full = _file(tmp_path / "f.db")
    with full.read() as conn:
        assert _pragmas(conn) == ("wal", 1, 2, 10000)
    full.close()


def test_stdlib_read_modify_write_from_many_connections_loses_no_update(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = _file(path)
    with first.write() as conn:
        conn.execute("INSERT INTO counter (id, n) VALUES (1, 0)")
    stores = [first, *(_file(path) for _ in range(3))]
    errors: list[BaseException] = []

    def bump(db: SQLiteFile) -> None:
        try:
            for _ in range(25):
                with db.write() as conn:
                    (n,) = conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()
                    conn.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(db,)) for db in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with first.read() as conn:
        assert conn.execute("SELECT n FROM counter").fetchone()[0] == 25 * len(threads)
    for db in stores:
        db.close()


def test_stdlib_failed_block_rolls_back_and_the_connection_is_reused(tmp_path: Path) -> None:
    db = _file(tmp_path / "s.db", pool_size=1)
    with db.write() as conn:
        conn.execute("INSERT INTO counter (id, n) VALUES (1, 1)")
        first = conn
    with pytest.raises(sqlite3.IntegrityError), db.write() as conn:
        conn.execute("UPDATE counter SET n = 5")
        conn.execute("INSERT INTO counter (id, n) VALUES (1, 2)")  # duplicate key
    with db.read() as conn:
        assert conn is first  # rolled back and back in the pool, not closed
        assert conn.execute("SELECT n FROM counter").fetchone()[0] == 1
    db.close()


def test_stdlib_lock_held_past_the_busy_timeout_is_the_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = _file(path, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        locked = r"test store .*s\.db: database is locked"
        with pytest.raises(_StoreError, match=locked), db.write() as conn:
            conn.execute("SELECT 1")
        with db.read() as conn:  # a reader is not held up by the writer
            assert conn.execute("SELECT n FROM counter").fetchall() == []
    finally:
        other.execute("ROLLBACK")
        other.close()
    db.close()


def test_stdlib_file_that_is_not_a_database_is_the_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(_StoreError, match=r"cannot open test store"):
        _file(path)


def test_stdlib_close_drops_the_pool_and_a_later_use_reconnects(tmp_path: Path) -> None:
    db = _file(tmp_path / "s.db")
    with db.write() as held:
        db.close()  # while a block holds a connection: that one is closed when given back
        held.execute("INSERT INTO counter (id, n) VALUES (1, 7)")
    with pytest.raises(sqlite3.ProgrammingError):
        held.execute("SELECT 1")
    with db.read() as conn:
        assert conn is not held
        assert conn.execute("SELECT n FROM counter").fetchone()[0] == 7
    db.close()


def _open_and_write(path: Path, start: Any) -> None:
    start.wait()
    store = SQLiteFile(path, what="test store", error=_StoreError)
    store.create(["CREATE TABLE IF NOT EXISTS t (n INTEGER)"])
    with store.write() as conn:
        conn.execute("INSERT INTO t VALUES (1)")


def test_processes_opening_a_new_file_together_all_get_in(tmp_path: Path) -> None:
    """Switching a new file to WAL answers "locked" without SQLite's busy handler; two CLI
    commands started together on a fresh node both have to open their store (a CI failure)."""
    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"{round_}.db"
        start = context.Barrier(6)
        processes = [context.Process(target=_open_and_write, args=(path, start)) for _ in range(6)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0] * 6, f"round {round_}"
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (6,)
