"""Index records by request id, so a client can find the records of its own request.

Revision ID: 0002_request_index
Revises: 0001_initial
"""

from __future__ import annotations

from alembic import op

revision = "0002_request_index"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_records_tenant_request", "audit_records", ["tenant", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_records_tenant_request", table_name="audit_records")
