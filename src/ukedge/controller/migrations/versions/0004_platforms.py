"""Multi-platform images: the platforms a revision's image offers (placement filters nodes by
them), and the accelerator each node has for each platform it can run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: revisions and nodes from before say nothing (any platform; none reported).
    op.add_column("revisions", sa.Column("platforms", sa.JSON(), nullable=True))
    op.add_column("nodes", sa.Column("accelerators", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("nodes", "accelerators")
    op.drop_column("revisions", "platforms")
