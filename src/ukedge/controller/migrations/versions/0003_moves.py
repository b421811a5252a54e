"""Controller-driven moves: each try at moving a replica to another node, the migration
address nodes report (where other nodes reach their migration listener), and how a draining
node's replicas move (``drain_migrate``: snapshot or live; None: they are replaced) and
since when (``drained_at``: tries are counted per drain).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("migration_host", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("drain_migrate", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("drained_at", sa.Float(), nullable=True))
    op.create_table(
        "moves",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.String(length=32), nullable=False),
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("offer", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_moves_source", "moves", ["source"])
    op.create_index("ix_moves_target", "moves", ["target"])


def downgrade() -> None:
    op.drop_index("ix_moves_target", table_name="moves")
    op.drop_index("ix_moves_source", table_name="moves")
    op.drop_table("moves")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("drained_at")
        batch.drop_column("drain_migrate")
        batch.drop_column("migration_host")
