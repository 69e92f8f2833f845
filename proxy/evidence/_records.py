"""Read-only queries over the audit store's tables, and decoding of a record's statement."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from audit import LogStore

__all__ = ["CHECKPOINTS", "RECORDS", "checkpoint_times", "statement", "window_rows"]

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


def window_rows(store: LogStore, log_id: str, start_us: int, end_us: int,
                tenant: str | None = None) -> Iterator[Any]:
    """Record rows with ``start_us <= time_us < end_us``, in leaf order, read in chunks."""
    after = -1
    while True:
        query = (sa.select(RECORDS).where(
            RECORDS.c.log_id == log_id, RECORDS.c.leaf_index > after,
            RECORDS.c.time_us >= start_us, RECORDS.c.time_us < end_us)
            .order_by(RECORDS.c.leaf_index).limit(_CHUNK))
        if tenant is not None:
            query = query.where(RECORDS.c.tenant == tenant)
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
        yield from rows
        if len(rows) < _CHUNK:
            return
        after = int(rows[-1].leaf_index)


def checkpoint_times(store: LogStore, log_id: str) -> dict[int, int]:
    """Publication time (µs) of each checkpoint by tree size."""
    query = sa.select(CHECKPOINTS.c.size, CHECKPOINTS.c.time_us).where(
        CHECKPOINTS.c.log_id == log_id)
    with store.engine.connect() as conn:
        return {int(s): int(t) for s, t in conn.execute(query)}
