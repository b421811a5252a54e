"""The hub's metadata: SQLite through SQLAlchemy Core, in WAL mode.

Blob bytes live in the storage driver; everything that says what those bytes *mean* lives here:
repositories, which blobs each repository may read (``blob_links``), manifests (their content too:
they are small and must change atomically with tags and references), tags, the blobs and child
manifests each manifest references (``manifest_refs``: the GC's mark set), upload sessions, users
and robot tokens.

Two engines share the file: reads begin a deferred transaction (WAL readers never wait), writes
``BEGIN IMMEDIATE`` so that check-then-write sequences (a manifest PUT checking its blobs, the GC
deleting an unreferenced blob) are serialised against each other, across processes too.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ukedge.errors import HubError

__all__ = [
    "Database",
    "MetadataError",
    "blob_links",
    "blobs",
    "manifest_refs",
    "manifests",
    "metadata",
    "repositories",
    "robot_tokens",
    "tags",
    "uploads",
    "users",
]

metadata = MetaData()

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(80), primary_key=True),
    Column("size", BigInteger, nullable=False),
    # Last time an upload or mount vouched for the blob; GC never sweeps younger than the grace.
    Column("touched_at", Float, nullable=False),
)

blob_links = Table(
    "blob_links",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(80), ForeignKey("blobs.digest", ondelete="CASCADE"), primary_key=True),
    Index("ix_blob_links_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("artifact_type", String(255)),
    Column("subject", String(80)),
    Column("annotations", Text),
    # Bytes of config + layers (or of the children, for an index): the size the web page shows.
    Column("total_size", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("pushed_at", Float, nullable=False),
    Index("ix_manifests_subject", "repo_id", "subject"),
)

manifest_refs = Table(
    "manifest_refs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("manifest_digest", String(80), nullable=False),
    Column("digest", String(80), nullable=False),
    # "blob" (config, layer) or "manifest" (an index's child)
    Column("kind", String(16), nullable=False),
    UniqueConstraint("repo_id", "manifest_digest", "digest", "kind"),
    Index("ix_manifest_refs_digest", "digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("digest", String(80), nullable=False),
    Column("updated_at", Float, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(16), nullable=False),
    # Bytes received as of the last chunk; storage (the session file's size) stays the truth.
    Column("offset", BigInteger, nullable=False, default=0),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", String(255), nullable=False),
    Column("grants", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

robot_tokens = Table(
    "robot_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("grants", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
)


class MetadataError(HubError):
    """The metadata database failed (locked past the busy timeout, disk full, corrupt)."""


def _engine(path: Path, begin: str) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi: sqlite3.Connection, _record: Any) -> None:
        dbapi.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """The metadata database of one hub data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _engine(path, "BEGIN IMMEDIATE")
        self._reader = _engine(path, "BEGIN")
        try:
            with self._writer.begin() as conn:
                metadata.create_all(conn)
        except SQLAlchemyError as exc:
            raise HubError(f"cannot open hub database {path}: {exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot; never blocks on writers (WAL)."""
        try:
            with self._reader.connect() as conn:
                try:
                    yield conn
                finally:
                    conn.rollback()
        except OperationalError as exc:
            raise MetadataError(f"hub database {self.path}: {exc.orig}") from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One serialised write transaction; commits on success, rolls back on any error."""
        try:
            with self._writer.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise MetadataError(f"hub database {self.path}: {exc.orig}") from exc

    def dispose(self) -> None:
        self._writer.dispose()
        self._reader.dispose()
