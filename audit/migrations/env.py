"""Alembic environment for the audit store; run only programmatically with a live connection,
inside the transaction ``LogStore._migrate`` began and holds the migration lock in (so that
alembic neither begins nor commits one of its own)."""

from __future__ import annotations

from alembic import context
from alembic.script import ScriptDirectory

from audit._errors import DatabaseTooNew
from audit._tables import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE)
known = {s.revision for s in ScriptDirectory.from_config(context.config).walk_revisions()}
for revision in context.get_context().get_current_heads():
    if revision not in known:  # alembic's own answer is a "Can't locate revision" traceback
        raise DatabaseTooNew(
            f"the audit database is at schema revision {revision!r}, which this release does "
            "not know: a newer Sealgate release wrote it; run that release or a later one")
with context.begin_transaction():  # ours already: alembic sees it and leaves it to us
    context.run_migrations()
