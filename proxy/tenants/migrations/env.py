"""Alembic environment for the state database (run programmatically by ``open_engine``).

Everything happens in one transaction, begun here so that alembic neither begins nor commits
one per migration: it first takes the migration lock, so processes opening a new database at
once (CLI commands, replicas) migrate one at a time and the later ones find the work done.
"""

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, engine_from_config, inspect, pool, text

from proxy.tenants._errors import StateUnavailable
from proxy.tenants._models import VERSION_TABLE

_MIGRATION_LOCK = 0x5EA15A7E  # replicas sharing one PostgreSQL migrate one at a time


def _lock(connection: Connection) -> None:
    """Hold the migration lock until the transaction ends: an advisory lock on PostgreSQL, the
    write lock on SQLite (``BEGIN IMMEDIATE``, waiting up to the busy timeout; without it the
    driver runs DDL outside any transaction, and two first starts both create the tables)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _known(revision: str, known: set[str]) -> str:
    """``revision``, if this release has it; alembic's own answer is a "Can't locate revision"
    traceback, and upgrading a newer release's schema is not this release's to do."""
    if revision not in known:
        raise StateUnavailable(
            f"the state database is at schema revision {revision!r}, which this release does not "
            "know: a newer Sealgate release wrote it; run that release or a later one",
            code="database_too_new")
    return revision


def _adopt_legacy_revision(connection: Connection, script: ScriptDirectory, known: set[str]) -> None:
    """A database from before this package had its own version table (releases before the
    state database could be shared used alembic's default, ``alembic_version``) carries its
    revision across; otherwise migration 0001 runs again, on its own tables. The old table
    stays, for that release. Revision ids like "0001" are common: the tables must be ours too."""
    migration = context.get_context()
    tables = inspect(connection)
    if (migration.get_current_heads() or not tables.has_table("alembic_version")
            or not tables.has_table("tenants")):
        return
    legacy = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    for revision in legacy.all():
        migration.stamp(script, _known(revision, known))


def _migrate(connection: Connection) -> None:
    _lock(connection)
    context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                      version_table=VERSION_TABLE)
    script = ScriptDirectory.from_config(context.config)
    known = {s.revision for s in script.walk_revisions()}
    _adopt_legacy_revision(connection, script, known)
    for revision in context.get_context().get_current_heads():
        _known(revision, known)
    with context.begin_transaction():  # ours already: alembic sees it and leaves it to us
        context.run_migrations()


config = context.config
connectable = engine_from_config(config.get_section(config.config_ini_section) or {},
                                 prefix="sqlalchemy.", poolclass=pool.NullPool,
                                 hide_parameters=True)
try:
    with connectable.connect() as connection, connection.begin():
        _migrate(connection)
finally:
    connectable.dispose()
