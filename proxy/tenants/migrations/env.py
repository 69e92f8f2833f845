"""Alembic environment for the tenant database (run programmatically by TenantStore)."""

from alembic import context
from sqlalchemy import engine_from_config, pool, text

_MIGRATION_LOCK = 0x5EA15A7E  # replicas sharing one PostgreSQL migrate one at a time

config = context.config
connectable = engine_from_config(config.get_section(config.config_ini_section) or {},
                                 prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    # Its own version table: the audit log may share this database (one PostgreSQL in a cluster).
    context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                      version_table="sealgate_state_version")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        context.run_migrations()
connectable.dispose()
