"""Initial audit schema: logs, records, Merkle nodes, checkpoints.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_logs",
        sa.Column("log_id", sa.String(64), primary_key=True),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("vkey", sa.String(512), nullable=False),
        sa.Column("integrated_size", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_records",
        sa.Column("log_id", sa.String(64), primary_key=True),
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_id", sa.String(32), nullable=False, unique=True),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("status", sa.BigInteger),
    )
    op.create_index("ix_audit_records_log_time", "audit_records", ["log_id", "time_us"])
    op.create_index("ix_audit_records_log_tenant", "audit_records", ["log_id", "tenant"])
    op.create_table(
        "audit_nodes",
        sa.Column("log_id", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("log_id", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_checkpoints", "audit_nodes", "audit_records", "audit_logs"):
        op.drop_table(table)
