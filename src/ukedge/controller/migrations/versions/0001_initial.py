"""The controller's first schema: join tokens, nodes, deployments and their revisions,
replicas, results (idempotent by node, instance and sequence).

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("previous_revision", sa.Integer(), nullable=True),
        sa.Column("rollout_state", sa.String(length=16), nullable=False),
        sa.Column("rollout_message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("uses_left", sa.Integer(), nullable=True),
        sa.Column("nodes_enrolled", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("credential_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("label_overrides", sa.JSON(), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("accelerator", sa.String(length=32), nullable=False),
        sa.Column("capacity_memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("capacity_vcpus", sa.BigInteger(), nullable=False),
        sa.Column("allocated_memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("allocated_vcpus", sa.BigInteger(), nullable=False),
        sa.Column("reserved_memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("reserved_vcpus", sa.BigInteger(), nullable=False),
        sa.Column("cached_layers", sa.JSON(), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", sa.Float(), nullable=False),
        sa.Column("last_heartbeat", sa.Float(), nullable=True),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("cordoned", sa.Boolean(), nullable=False),
        sa.Column("draining", sa.Boolean(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("applied_generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "results",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("node_id", "instance", "seq", name="uq_results_key"),
    )
    op.create_index("ix_results_deployment", "results", ["deployment"])
    op.create_index("ix_results_ts", "results", ["ts"])
    op.create_table(
        "replicas",
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.String(length=32), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("assigned_at", sa.Float(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("deployment", "replica"),
    )
    op.create_index("ix_replicas_node", "replicas", ["node_id"])
    op.create_table(
        "revisions",
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("image_digest", sa.String(length=600), nullable=False),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment", "revision"),
    )


def downgrade() -> None:
    op.drop_table("revisions")
    op.drop_index("ix_replicas_node", "replicas")
    op.drop_table("replicas")
    op.drop_index("ix_results_ts", "results")
    op.drop_index("ix_results_deployment", "results")
    op.drop_table("results")
    op.drop_table("nodes")
    op.drop_table("join_tokens")
    op.drop_table("deployments")
