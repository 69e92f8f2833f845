"""Incremental, in-memory aggregates of the log for the overview, policy and enclave pages.

Each record is read once (in leaf order, from where the last refresh stopped); its metadata
columns and a few signed predicate fields (retention tier, policy and evidence digests) are
folded into counters keyed by tenant, so a tenant-scoped view is a sum over its own keys.
Folding takes about 40 µs a record: the dashboard refreshes in slices (``_backlog``), so a
large log is caught up in the background after a restart instead of inside one page view.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from audit import LogStore
from proxy.evidence._records import RECORDS

__all__ = ["Key", "RecordIndex", "Seen"]

_CHUNK = 1000  # records per query: about 40 ms of folding
_HOUR_US = 3_600_000_000


@dataclass(frozen=True, slots=True)
class Key:
    tenant: str
    decision: str
    kind: str
    model: str
    tier: str
    hour: int


@dataclass
class Seen:
    """First and last time (µs) a digest was cited, and by how many records; in all, and per
    tenant (a reviewer scoped to one tenant sees only that tenant's times and counts)."""

    first_us: int
    last_us: int
    by_tenant: Counter[str] = field(default_factory=Counter)
    span_by_tenant: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, tenant: str, time_us: int) -> None:
        self.first_us = min(self.first_us, time_us)
        self.last_us = max(self.last_us, time_us)
        self.by_tenant[tenant] += 1
        first, last = self.span_by_tenant.get(tenant, (time_us, time_us))
        self.span_by_tenant[tenant] = (min(first, time_us), max(last, time_us))

    def of(self, tenant: str | None) -> Seen:
        """What ``tenant`` may see (None: everything)."""
        if tenant is None:
            return self
        first, last = self.span_by_tenant.get(tenant, (self.first_us, self.last_us))
        return Seen(first, last, Counter({tenant: self.by_tenant[tenant]}))


def _predicate(envelope: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        pred = doc.get("predicate")
        return pred if isinstance(pred, dict) else {}
    except (ValueError, KeyError, TypeError):
        return {}


class RecordIndex:
    def __init__(self, store: LogStore, log_id: str) -> None:
        self.store, self.log_id = store, log_id
        self.counts: Counter[Key] = Counter()
        self.policies: dict[str, Seen] = {}
        self.evidence: dict[str, Seen] = {}
        self.next_leaf = 0
        self._lock = threading.Lock()

    def refresh(self, seconds: float | None = None) -> bool:
        """Fold in the records appended since the last refresh: all of them, or, with
        ``seconds``, chunks until about that long has passed. True when none is left."""
        deadline = None if seconds is None else time.monotonic() + seconds
        with self._lock:
            while True:
                rows = self._rows()
                for row in rows:
                    self._fold(row)
                if len(rows) < _CHUNK:
                    return True
                if deadline is not None and time.monotonic() > deadline:
                    return False

    def _rows(self) -> list[Any]:
        c = RECORDS.c
        query = (sa.select(c.leaf_index, c.tenant, c.decision, c.kind, c.model, c.time_us,
                           c.envelope)
                 .where(c.log_id == self.log_id, c.leaf_index >= self.next_leaf)
                 .order_by(c.leaf_index).limit(_CHUNK))
        with self.store.engine.connect() as conn:
            return list(conn.execute(query).all())

    def _fold(self, row: Any) -> None:
        pred = _predicate(bytes(row.envelope))
        tenant, time_us = str(row.tenant), int(row.time_us)
        key = Key(tenant, str(row.decision), str(row.kind), str(row.model or "-"),
                  str(pred.get("retention_tier", "-")), time_us // _HOUR_US)
        self.counts[key] += 1
        for table, name in ((self.policies, "policy_bundle_digest"),
                            (self.evidence, "evidence_digest")):
            digest = str(pred.get(name, "-"))
            seen = table.get(digest)
            if seen is None:
                seen = table[digest] = Seen(time_us, time_us)
            seen.add(tenant, time_us)
        self.next_leaf = int(row.leaf_index) + 1

    def scoped(self, tenant: str | None) -> Iterable[tuple[Key, int]]:
        return ((k, n) for k, n in list(self.counts.items())
                if tenant is None or k.tenant == tenant)

    def seen(self, table: dict[str, Seen], tenant: str | None) -> list[tuple[str, Seen, int]]:
        """(digest, seen, records) visible to ``tenant`` (None: all), oldest first."""
        out = []
        for digest, seen in list(table.items()):
            count = sum(seen.by_tenant.values()) if tenant is None else seen.by_tenant[tenant]
            if count:
                out.append((digest, seen.of(tenant), count))
        return sorted(out, key=lambda item: item[1].first_us)
