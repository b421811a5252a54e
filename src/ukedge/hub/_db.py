"""The hub's metadata: SQLite through SQLAlchemy Core, in WAL mode.

Blob bytes live in the storage driver; everything that says what those bytes *mean* lives here:
repositories, which blobs each repository may read (``blob_links``), manifests (their content too:
they are small and must change atomically with tags and references), tags, the blobs and child
manifests each manifest references (``manifest_refs``: the GC's mark set), upload sessions, users
and robot tokens.

Set up by :mod:`ukedge.sqlite`: reads begin a deferred transaction (WAL readers never wait),
writes ``BEGIN IMMEDIATE`` so that check-then-write sequences (a manifest PUT checking its blobs,
the GC deleting an unreferenced blob) are serialised against each other, across processes too.
``synchronous=NORMAL``: a power cut may lose the last pushes (the client pushes again), never
the consistency of what is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
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
)

from ukedge.errors import HubError
from ukedge.sqlite import SQLiteDatabase

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


class Database:
    """The metadata database of one hub data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SQLiteDatabase(
            path,
            what="hub database",
            error=MetadataError,
            synchronous="NORMAL",
            busy_timeout=30.0,
            pool_size=8,
            max_overflow=16,
        )
        self._db.create_all(metadata)  # MetadataError (a HubError) naming the file

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot; never blocks on writers (WAL)."""
        with self._db.read() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One serialised write transaction; commits on success, rolls back on any error."""
        with self._db.write() as conn:
            yield conn

    def dispose(self) -> None:
        self._db.close()
