"""Checked dashboard query and form values: every value is bounded before it reaches SQL or
date arithmetic, and a bad one is a :class:`BadQuery` (a 400 page), never a 500."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from proxy.evidence._export import to_us as time_us  # exact microseconds since the epoch

__all__ = ["DECISIONS", "KINDS", "MAX_PAGE", "RECORD_ID", "BadQuery", "page_number", "text_value",
           "time_us", "when"]

DECISIONS = ("allow", "deny")
KINDS = ("intent", "completion", "denial")
RECORD_ID = re.compile(r"[0-9a-f]{32}")  # as the audit log mints them
# Far past any real log, and page * page size stays a 64-bit SQL OFFSET on every backend.
MAX_PAGE = 1_000_000_000
# Records are stamped in microseconds since the Unix epoch. The upper bound leaves room for the
# day added to an inclusive end date and any UTC offset (Python dates stop at 9999-12-31).
EARLIEST, LATEST = date(1970, 1, 1), date(9998, 12, 31)
_MAX_TEXT = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # PostgreSQL refuses NUL in text; nothing needs these
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_START, _STOP = _EPOCH, datetime.combine(LATEST + timedelta(days=1), time(), UTC)


class BadQuery(ValueError):
    """A query or form value the dashboard will not use; the message names it and says why."""


def page_number(text: str | None) -> int:
    if text is None or text == "":
        return 1
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 1 <= int(text) <= MAX_PAGE:
        raise BadQuery(f"page must be a whole number from 1 to {MAX_PAGE:,}.")
    return int(text)


def text_value(name: str, text: str | None, choices: tuple[str, ...] = ()) -> str | None:
    """A filter value: empty means none; at most 128 characters, no control characters."""
    if not text:
        return None
    if choices and text not in choices:
        raise BadQuery(f"{name} must be one of: {', '.join(choices)}.")
    if len(text) > _MAX_TEXT or _CONTROL.search(text):
        raise BadQuery(f"{name} must be at most {_MAX_TEXT} printable characters.")
    return text


def when(name: str, text: str | None, *, end: bool = False) -> datetime | None:
    """An ISO 8601 date or date-time (UTC unless it has an offset) from EARLIEST to LATEST.
    A plain date as an ``end`` is inclusive: the window runs to the start of the next day."""
    if not text:
        return None
    problem = f"{name} must be a date (YYYY-MM-DD) or ISO 8601 time from {EARLIEST} to {LATEST}."
    if len(text) > 64 or not text.isascii():
        raise BadQuery(problem)
    try:
        day: date | None = date.fromisoformat(text)
    except ValueError:
        day = None
    try:
        value = datetime.fromisoformat(text) if day is None else datetime.combine(day, time(), UTC)
    except ValueError as exc:
        raise BadQuery(problem) from exc
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    # Aware comparisons subtract offsets as timedeltas, so they cannot overflow near 0001 / 9999.
    if not _START <= value < _STOP:
        raise BadQuery(problem)
    return value + timedelta(days=1) if day is not None and end else value


