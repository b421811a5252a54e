"""Result bridges: how far each destination (an MQTT broker the controller republishes to) has
confirmed the stored results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "result_cursors",
        sa.Column("sink", sa.String(length=512), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sink"),
    )


def downgrade() -> None:
    op.drop_table("result_cursors")
