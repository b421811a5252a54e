"""Alembic's environment for the controller: always run in-process by
:func:`ukedge.controller._migrate.upgrade`, on the connection it passes (never from a URL in an
ini file), so SQLite gets the project's pragmas and the migration is one transaction."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from ukedge.controller._db import metadata

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
