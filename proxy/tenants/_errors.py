"""The state database's error, and the one seam where foreign errors become it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from proxy.errors import SealgateError

__all__ = ["StateUnavailable", "state_errors"]


class StateUnavailable(SealgateError):
    """The state database (tenants, keys, accounts) cannot serve an operation: unreachable,
    locked past the busy timeout, or at a schema this release does not know
    (``database_too_new``). A 503: the request was fine, a retry may succeed."""

    code = "state_unavailable"
    status = 503
    type = "api_error"


@contextlib.contextmanager
def state_errors(operation: str) -> Iterator[None]:
    """Raise what SQLAlchemy, alembic, the driver or the file system raise while doing
    ``operation`` ("create an API key") as :class:`StateUnavailable`. Their messages carry the
    SQL and its bound parameters (password and key hashes), so the detail names the operation
    and the reason only."""
    try:
        yield
    except (SQLAlchemyError, CommandError, sqlite3.Error, OSError) as exc:
        raise StateUnavailable(f"could not {operation}: the state database failed "
                               f"({_reason(exc)})") from exc


def _reason(exc: Exception) -> str:
    """SQLite's own message ("database is locked": fixed text, never a value), the file
    system's or alembic's; for anything else only the class: a PostgreSQL error's detail quotes
    the values of the row, and an SQLAlchemy URL error the URL with its password."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    if isinstance(cause, (sqlite3.Error, OSError, CommandError)):
        return str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return type(cause).__name__
