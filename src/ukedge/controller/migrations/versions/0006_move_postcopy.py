"""Post-copy for controller-driven live moves: per move, and per drain that asks for it
(``ukedge migrate … --to NODE --mode live --postcopy``, ``ukedge node drain --migrate --mode live
--postcopy``). Both default to false, so rows written before keep their meaning.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("moves") as batch:
        batch.add_column(
            sa.Column("postcopy", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("drain_postcopy", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("drain_postcopy")
    with op.batch_alter_table("moves") as batch:
        batch.drop_column("postcopy")
