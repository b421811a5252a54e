"""The schema's migrations (Alembic, packaged in ``migrations/``), applied at every start.

``upgrade head`` runs on a connection of the controller's own :class:`Database`, inside one
transaction (both SQLite and PostgreSQL have transactional DDL): a crash or a failing migration
leaves the schema as it was. Several controller processes starting on one PostgreSQL at once
serialise on an advisory lock, so only the first migrates and the others find it done.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from ukedge.controller._db import Database

__all__ = ["alembic_config", "upgrade"]

#: Held while migrating on PostgreSQL ("ukedge-m" in ASCII).
_MIGRATION_LOCK = 0x756B656467652D6D


def alembic_config() -> Config:
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("ukedge.controller") / "migrations")
    )
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest)."""
    config = alembic_config()
    with database.write() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
