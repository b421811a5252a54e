"""The controller's state: tables (SQLAlchemy Core) and the database they live in.

One schema on two engines: a SQLite file (the embedded default, set up by :mod:`ukedge.sqlite`:
WAL, busy timeout, ``BEGIN IMMEDIATE`` so that check-then-write sequences such as consuming a
join token serialise across processes) or PostgreSQL through psycopg 3 (several controller
processes, one leader). Every state change is one transaction; a crash leaves the last
committed state. The schema is made and changed only by the Alembic migrations in
``migrations/`` (see :mod:`ukedge.controller._migrate`), never by ``create_all``.

Times are floats (seconds since the epoch, the controller's clock); labels, specs and layer maps
are JSON columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    false,
    make_url,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import Insert

from ukedge.errors import ControllerError
from ukedge.sqlite import SQLiteDatabase

__all__ = [
    "Database",
    "deployments",
    "insert_ignoring_duplicates",
    "join_tokens",
    "metadata",
    "moves",
    "nodes",
    "replicas",
    "result_cursors",
    "results",
    "revisions",
]

metadata = MetaData()

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of the secret
    Column("description", String(512), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("uses_left", Integer, nullable=True),  # None: unlimited
    Column("nodes_enrolled", Integer, nullable=False, default=0),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(253), nullable=False, unique=True),
    Column("credential_hash", String(64), nullable=False),
    Column("token_id", String(32), nullable=True),
    Column("labels", JSON, nullable=False),  # as the node reports them
    # What the operator changed: {"set": {...}, "remove": [...]}, applied over the reported.
    Column("label_overrides", JSON, nullable=False),
    Column("architecture", String(32), nullable=False),
    Column("accelerator", String(32), nullable=False, default=""),
    # {"linux/amd64": "kvm", "linux/arm64": "tcg"}: each platform it can run (None: unreported).
    Column("accelerators", JSON, nullable=True),
    Column("capacity_memory_mib", BigInteger, nullable=False, default=0),
    Column("capacity_vcpus", BigInteger, nullable=False, default=0),
    Column("allocated_memory_mib", BigInteger, nullable=False, default=0),
    Column("allocated_vcpus", BigInteger, nullable=False, default=0),
    # What instances the controller does not own hold (started by hand on the node).
    Column("reserved_memory_mib", BigInteger, nullable=False, default=0),
    Column("reserved_vcpus", BigInteger, nullable=False, default=0),
    Column("cached_layers", JSON, nullable=False),
    Column("instances", Integer, nullable=False, default=0),
    Column("enrolled_at", Float, nullable=False),
    Column("last_heartbeat", Float, nullable=True),
    Column("ready", Boolean, nullable=False, default=False),
    Column("cordoned", Boolean, nullable=False, default=False),
    Column("draining", Boolean, nullable=False, default=False),
    # Bumped whenever the node's set of replicas changes; the agent reports what it applied.
    Column("generation", BigInteger, nullable=False, default=1),
    Column("applied_generation", BigInteger, nullable=False, default=0),
    # Where other nodes reach its migration listener (None: it takes no part in moves).
    Column("migration_host", String(253), nullable=True),
    # Drained with --migrate: how its replicas move (snapshot, live); None: they are replaced.
    Column("drain_migrate", String(16), nullable=True),
    # When the last drain began: a drain with --migrate counts the tries made since.
    Column("drained_at", Float, nullable=True),
    # A drain with --migrate --mode live --postcopy: its moves switch to post-copy.
    Column("drain_postcopy", Boolean, nullable=False, default=False, server_default=false()),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("revision", Integer, nullable=False),  # the current revision
    # Scaling is no new revision (as in Kubernetes): the count lives here, not in the spec.
    Column("replicas", Integer, nullable=False),
    Column("previous_revision", Integer, nullable=True),  # what a failed rollout returns to
    Column("rollout_state", String(16), nullable=False, default="progressing"),
    Column("rollout_message", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

revisions = Table(
    "revisions",
    metadata,
    Column(
        "deployment",
        String(64),
        ForeignKey("deployments.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("revision", Integer, primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("image_digest", String(600), nullable=False),  # repo@sha256:...
    Column("layers", JSON, nullable=False),  # {digest: size}
    # The image's platforms (["linux/amd64", "linux/arm64/v8"]); None or []: not known (any).
    Column("platforms", JSON, nullable=True),
    Column("memory_mib", Integer, nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

replicas = Table(
    "replicas",
    metadata,
    Column(
        "deployment",
        String(64),
        ForeignKey("deployments.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("replica", String(32), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("node_id", String(32), ForeignKey("nodes.id", ondelete="SET NULL"), nullable=True),
    Column("state", String(16), nullable=False, default="pending"),
    Column("assigned_at", Float, nullable=False),
    # The node's last report of the instance (its name, state, health...), or None.
    Column("report", JSON, nullable=True),
    Index("ix_replicas_node", "node_id"),
)

#: Each try at moving a replica to another node (:mod:`ukedge.controller._moves`). Kept after
#: it ended (without its offer) as the move's history; the replica's row names its node.
moves = Table(
    "moves",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "deployment",
        String(64),
        ForeignKey("deployments.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("replica", String(32), nullable=False),
    Column("instance", String(128), nullable=False),
    Column("source", String(32), nullable=False),
    Column("target", String(32), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("step", String(32), nullable=False),
    Column("offer", JSON, nullable=True),  # the target's offer, while the move needs it
    Column("error", Text, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("cancelled_at", Float, nullable=True),  # when the operator cancelled it
    Column("postcopy", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_moves_source", "source"),
    Index("ix_moves_target", "target"),
)

results = Table(
    "results",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("node_id", String(32), nullable=False),
    Column("instance", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("deployment", String(64), nullable=True),
    Column("ts", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("line", Text, nullable=False),
    Column("error", Text, nullable=True),
    UniqueConstraint("node_id", "instance", "seq", name="uq_results_key"),
    Index("ix_results_deployment", "deployment"),
    Index("ix_results_ts", "ts"),
)

#: How far each result bridge (MQTT republishing) has delivered: the last result id the
#: destination confirmed. In the database, so a new leader continues where the old one stopped.
result_cursors = Table(
    "result_cursors",
    metadata,
    Column("sink", String(512), primary_key=True),
    Column("last_id", BigInteger, nullable=False),
)


def insert_ignoring_duplicates(connection: Connection, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` in the connection's dialect (idempotent writes)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class Database:
    """The controller's database: ``write()`` and ``read()`` transactions on either engine.

    Errors the engine raises for a lost or locked database become :class:`ControllerError`
    naming the database (with the password masked).
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = url
        self.shown = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        self._sqlite: SQLiteDatabase | None = None
        if self.dialect == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ControllerError(f"{url!r}: the SQLite database must be a file", status=400)
            self._sqlite = SQLiteDatabase(
                Path(parsed.database), what="controller database", error=ControllerError
            )
            self.engine: Engine = self._sqlite.engine
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                parsed.set(drivername="postgresql+psycopg"),
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
            )
        else:
            raise ControllerError(f"unsupported database {self.shown}", status=400)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise ControllerError(f"controller database {self.shown}: {cause}") from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: commits on success, rolls back on any error."""
        if self._sqlite is not None:
            with self._sqlite.write() as connection:
                yield connection
            return
        with self._errors(), self.engine.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (on SQLite a WAL snapshot that never waits for writers)."""
        if self._sqlite is not None:
            with self._sqlite.read() as connection:
                yield connection
            return
        with self._errors(), self.engine.connect() as connection:
            try:
                yield connection
            finally:
                connection.rollback()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        else:
            self.engine.dispose()
