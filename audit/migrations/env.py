"""Alembic environment for the audit store; run only programmatically with a live connection."""

from __future__ import annotations

from alembic import context

from audit._tables import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
