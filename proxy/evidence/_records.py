"""Read-only queries over the audit store's tables, and decoding of a record's statement."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from audit import LogStore

from ._errors import ExportFailed

__all__ = ["CHECKPOINTS", "RECORDS", "checkpoint_times", "rows_at", "rows_from", "scan_start",
           "statement", "window_bounds"]

RECORDS = sa.table(
    "audit_records", *(sa.column(c) for c in (
        "log_id", "leaf_index", "record_id", "envelope", "kind", "tenant", "request_id",
        "time_us", "decision", "channel", "endpoint", "model", "status")))
CHECKPOINTS = sa.table(
    "audit_checkpoints", *(sa.column(c) for c in ("log_id", "size", "root_hash", "note", "time_us")))
_CHUNK = 5000


def statement(envelope: bytes) -> dict[str, Any]:
    """The in-toto statement inside a DSSE envelope (not verified here)."""
    doc = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return doc if isinstance(doc, dict) else {}


def window_bounds(store: LogStore, log_id: str, start_us: int, end_us: int) -> tuple[int, int]:
    """The first and last leaf whose ``time_us`` column lies in the window; with none, an empty
    range (``first == last + 1``) where such a leaf would be. Columns are only where to start
    looking: the rows are checked against what the log signed before anything is chosen."""
    inside = (RECORDS.c.log_id == log_id, RECORDS.c.time_us >= start_us, RECORDS.c.time_us < end_us)
    with store.engine.connect() as conn:
        low, high = conn.execute(sa.select(sa.func.min(RECORDS.c.leaf_index),
                                           sa.func.max(RECORDS.c.leaf_index)).where(*inside)).one()
        if low is not None:
            return _leaf(low), _leaf(high)
        after = conn.execute(sa.select(sa.func.min(RECORDS.c.leaf_index)).where(
            RECORDS.c.log_id == log_id, RECORDS.c.time_us >= start_us)).scalar()
    first = store.next_index(log_id) if after is None else _leaf(after)
    return first, first - 1


def scan_start(store: LogStore, log_id: str, first: int, before_us: int) -> int:
    """Where a scan of the window from leaf ``first`` starts: the last leaf before it whose
    ``time_us`` column is before ``before_us``, else leaf 0. Only a hint: the scan checks that
    leaf's signed time."""
    leaf = RECORDS.c.leaf_index
    with store.engine.connect() as conn:
        lo = conn.execute(sa.select(sa.func.max(leaf)).where(
            RECORDS.c.log_id == log_id, leaf < first, RECORDS.c.time_us < before_us)).scalar()
    return 0 if lo is None else _leaf(lo)


def _leaf(value: Any) -> int:
    """A leaf index read from the store: an integer, or the store is not what the log wrote
    (SQLite keeps ``29.5`` in an integer column, and ``int()`` would make it 29)."""
    if type(value) is not int or value < 0:
        raise ExportFailed("the audit store does not match what the log signed (a leaf index "
                           "is not a whole number); run `sealgate audit verify` for the whole log")
    return value


def rows_from(store: LogStore, log_id: str, first: int) -> Iterator[Any]:
    """Record rows from leaf ``first`` on, up to the last, read in chunks. A missing leaf is
    not skipped over silently: the caller sees the next row's index."""
    index = first
    while True:
        rows = store.record_rows(log_id, index, _CHUNK)
        yield from rows
        if len(rows) < _CHUNK:
            return
        index = int(rows[-1].leaf_index) + 1


def rows_at(store: LogStore, log_id: str, leaves: list[int]) -> Iterator[tuple[int, Any]]:
    """``(leaf, row)`` for each of ``leaves`` (ascending), read a chunk of leaves at a time,
    skipping the stretches between them; a leaf the store does not hold is paired with
    ``None``."""
    i = 0
    while i < len(leaves):
        start = leaves[i]
        rows = {r.leaf_index: r for r in store.record_rows(log_id, start, _CHUNK)}
        while i < len(leaves) and leaves[i] < start + _CHUNK:
            yield leaves[i], rows.get(leaves[i])
            i += 1


def checkpoint_times(store: LogStore, log_id: str) -> dict[int, int]:
    """Publication time (µs) of each checkpoint by tree size."""
    query = sa.select(CHECKPOINTS.c.size, CHECKPOINTS.c.time_us).where(
        CHECKPOINTS.c.log_id == log_id)
    with store.engine.connect() as conn:
        return {int(s): int(t) for s, t in conn.execute(query)}
