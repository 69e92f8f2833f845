"""Page data: overview aggregates and the filtered, paginated record list."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from audit import LogStore
from proxy.evidence._records import RECORDS

from ._charts import bars, columns
from ._index import RecordIndex

__all__ = ["RecordFilter", "overview", "query_records"]

PAGE_SIZE = 50
_HOUR_US = 3_600_000_000


def fmt_us(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


def overview(index: RecordIndex, scope: str | None, names: dict[str, str]) -> dict[str, Any]:
    by: dict[str, Counter[str]] = {k: Counter() for k in ("tenant", "model", "tier", "kind")}
    decisions: Counter[str] = Counter()
    hours: dict[int, list[int]] = {}
    total = 0
    for key, n in index.scoped(scope):
        total += n
        by["kind"][key.kind] += n
        if key.kind == "completion":
            continue  # requests are intents and denials; completions restate an intent
        decisions[key.decision] += n
        by["tenant"][names.get(key.tenant, key.tenant)] += n
        by["model"][key.model] += n
        by["tier"][key.tier] += n
        slot = hours.setdefault(key.hour, [0, 0])
        slot[0 if key.decision == "allow" else 1] += n
    return {
        "total_records": total, "requests": sum(decisions.values()),
        "allowed": decisions["allow"], "denied": decisions["deny"],
        "charts": {name: bars(counter.most_common(12), f"requests by {name}")
                   for name, counter in by.items()},
        "timeline": columns(_timeline(hours), "requests over time (allowed / denied)"),
    }  # fmt: skip


def _timeline(hours: dict[int, list[int]]) -> list[tuple[str, int, int]]:
    if not hours:
        return []
    first, last = min(hours), max(hours)
    if last - first > 72:  # more than three days: one column per day
        days: dict[int, list[int]] = {}
        for hour, (a, d) in hours.items():
            slot = days.setdefault(hour // 24, [0, 0])
            slot[0] += a
            slot[1] += d
        return [(fmt_us(day * 24 * _HOUR_US)[:10], *days.get(day, [0, 0]))  # type: ignore[misc]
                for day in range(first // 24, last // 24 + 1)]
    return [(fmt_us(h * _HOUR_US)[:13] + "h", *hours.get(h, [0, 0]))  # type: ignore[misc]
            for h in range(first, last + 1)]


@dataclass(frozen=True)
class RecordFilter:
    """Checked filter values (see ``_query``); times are microseconds since the epoch."""

    tenant: str | None = None
    decision: str | None = None
    kind: str | None = None
    model: str | None = None
    start_us: int | None = None
    end_us: int | None = None
    page: int = 1


def _conditions(log_id: str, f: RecordFilter) -> list[Any]:
    c = RECORDS.c
    conds: list[Any] = [c.log_id == log_id]
    for column, value in ((c.tenant, f.tenant), (c.decision, f.decision), (c.kind, f.kind),
                          (c.model, f.model)):
        if value:
            conds.append(column == value)
    if f.start_us is not None:
        conds.append(c.time_us >= f.start_us)
    if f.end_us is not None:
        conds.append(c.time_us < f.end_us)
    return conds


def query_records(store: LogStore, log_id: str, f: RecordFilter) -> tuple[list[Any], int]:
    """One page of matching rows, newest first, and the number of matches."""
    c = RECORDS.c
    conds = _conditions(log_id, f)
    cols = (c.record_id, c.leaf_index, c.time_us, c.tenant, c.kind, c.decision, c.model,
            c.endpoint, c.channel, c.status)
    page = (sa.select(*cols).where(*conds).order_by(c.leaf_index.desc())
            .limit(PAGE_SIZE).offset((max(f.page, 1) - 1) * PAGE_SIZE))
    count = sa.select(sa.func.count()).select_from(RECORDS).where(*conds)
    with store.engine.connect() as conn:
        rows = list(conn.execute(page).all())
        total = int(conn.execute(count).scalar_one())
    return rows, total
