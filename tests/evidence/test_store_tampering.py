"""An export reads the audit store, whose columns nobody signed: whoever can write the database
(a PostgreSQL server outside the enclave, its operator) must not be able to leave a record out
of a bundle that calls itself complete, nor put one in the wrong tenant's. Every row an export
reads is checked against its signature and the signed tree, so a tampered store fails the
export instead (real gateway data, copied, then changed with SQL)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import proxy.evidence._export as export_module
from audit import AuditLog, LogStore, load_or_create_signing_key
from proxy.evidence import ExportFailed, ExportOptions, build_bundle, verify_bundle
from proxy.evidence._export import instant_us, iso, to_us
from tests.evidence.conftest import Traffic


def _copy(traffic: Traffic, folder: Path) -> Path:
    source, copy = traffic.gateway.data_dir, folder / "data"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("audit.db*"))
    with sqlite3.connect(source / "audit.db") as live, sqlite3.connect(copy / "audit.db") as kept:
        live.backup(kept)
    return copy


def _export(data_dir: Path, tenant: str | None = None, origin: str | None = None) -> bytes:
    key = load_or_create_signing_key(data_dir / "keys" / "log-signing-key.pem")
    store = LogStore.open(f"sqlite:///{data_dir / 'audit.db'}", read_only=True)
    now = datetime.now(UTC)
    options = ExportOptions(now - timedelta(days=1), now + timedelta(minutes=1), tenant,
                            origin=origin)
    try:
        return build_bundle(store, data_dir, key, options)
    finally:
        store.close()


def _sql(data_dir: Path, *statements: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "audit.db") as db:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = db.execute(statement).fetchall()
        return rows


def _tenants(data_dir: Path) -> list[str]:
    return [str(t) for (t,) in _sql(data_dir, "SELECT DISTINCT tenant FROM audit_records "
                                              "ORDER BY tenant")]


def test_an_untouched_copy_exports_and_verifies(traffic: Traffic, tmp_path: Path) -> None:
    copy = _copy(traffic, tmp_path)
    for tenant in (None, *_tenants(copy)):
        assert verify_bundle(_export(copy, tenant), allow_simulated=True).ok


@pytest.mark.parametrize("change", [
    # the window's middle record moved out of it by its time column
    "UPDATE audit_records SET time_us = 0 WHERE leaf_index = (SELECT max(leaf_index) / 2 "
    "FROM audit_records)",
    # the window's first record moved out of it, to after its end
    "UPDATE audit_records SET time_us = 253402300799000000 WHERE leaf_index = (SELECT "
    "min(leaf_index) FROM audit_records WHERE kind != 'startup')",
    # a denial counted as an allow
    "UPDATE audit_records SET decision = 'allow' WHERE leaf_index = (SELECT min(leaf_index) "
    "FROM audit_records WHERE decision = 'deny')",
    # a record dropped from the middle of the log
    "DELETE FROM audit_records WHERE leaf_index = (SELECT max(leaf_index) / 2 FROM "
    "audit_records)",
    # two records trade places, each row still restating its own signed record
    "UPDATE audit_records SET leaf_index = -1 - leaf_index WHERE leaf_index IN (2, 3)",
], ids=["time-moved-out", "first-moved-after", "decision-flipped", "row-deleted", "rows-swapped"])
def test_a_store_that_differs_from_what_was_signed_fails_the_export(
        traffic: Traffic, tmp_path: Path, change: str) -> None:
    copy = _copy(traffic, tmp_path)
    statements = [change]
    if "-1 - leaf_index" in change:  # then 2 ↔ 3: -3 → 2 and -4 → 3, under the unique index
        statements += ["UPDATE audit_records SET leaf_index = 2 WHERE leaf_index = -4",
                       "UPDATE audit_records SET leaf_index = 3 WHERE leaf_index = -3"]
    _sql(copy, *statements)
    with pytest.raises(ExportFailed, match="does not match what the log signed"):
        _export(copy)


def test_a_fractional_leaf_index_cannot_end_the_scan_early(traffic: Traffic, tmp_path: Path) -> None:
    """SQLite keeps 29.5 in an integer column: a junk row there, dated long after the window,
    with the last records' times moved out of it, must not end the scan before those records
    (they are read, and their columns fail)."""
    copy = _copy(traffic, tmp_path)
    (top,) = _sql(copy, "SELECT MAX(leaf_index) FROM audit_records")[0]
    _sql(copy, f"UPDATE audit_records SET time_us = 0 WHERE leaf_index >= {top - 3}",
         "INSERT INTO audit_records (log_id, leaf_index, record_id, envelope, kind, tenant, "
         "request_id, time_us, decision, channel, endpoint) SELECT log_id, "
         f"{top - 3.5}, 'junk', X'00', 'intent', 't', 'r', 253402300799000000, 'allow', "
         "'sealed', '/x' FROM audit_logs")
    with pytest.raises(ExportFailed, match="does not match what the log signed"):
        _export(copy)


@pytest.mark.parametrize("start", ["a record inside the window", "a leaf index as text"])
def test_where_the_scan_starts_is_checked_against_what_was_signed(
        traffic: Traffic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str) -> None:
    """The database names the leaf the scan starts at; a server that lies about it (or a
    writer racing the query) cannot skip the window's first records: that leaf's signed time
    must be well before the window."""
    copy = _copy(traffic, tmp_path)
    if start == "a leaf index as text":
        _sql(copy, "UPDATE audit_records SET leaf_index = 'x' WHERE leaf_index = 0")
        match = "leaf index is not a whole number|leaf 0 is missing"
    else:
        monkeypatch.setattr(export_module, "scan_start", lambda *_: 5)
        match = "leaf 5, where the scan starts, is not well before the window"
    with pytest.raises(ExportFailed, match=match):
        _export(copy)


def test_a_record_moved_to_another_tenant_fails_that_tenants_export(traffic: Traffic,
                                                                     tmp_path: Path) -> None:
    copy = _copy(traffic, tmp_path)
    mine, theirs = _tenants(copy)[:2]
    _sql(copy, f"UPDATE audit_records SET tenant = '{theirs}' WHERE leaf_index = (SELECT "
               f"max(leaf_index) FROM audit_records WHERE tenant = '{mine}')")
    with pytest.raises(ExportFailed, match="does not match what the log signed"):
        _export(copy, mine)


def test_a_key_that_signs_two_logs_exports_the_named_one(traffic: Traffic, tmp_path: Path) -> None:
    """The log origin changed and the data directory was kept: the key signs two logs. Which
    one is exported is the configured origin's, never whichever comes first."""
    copy = _copy(traffic, tmp_path)
    (origin,) = _sql(copy, "SELECT origin FROM audit_logs")[0]
    key = load_or_create_signing_key(copy / "keys" / "log-signing-key.pem")

    async def second_log() -> None:
        await (await AuditLog.open(f"sqlite:///{copy / 'audit.db'}", key, "other.test/audit")).close()

    asyncio.run(second_log())
    with pytest.raises(ExportFailed, match="signs several logs"):
        _export(copy)
    with pytest.raises(ExportFailed, match="signs several logs"):
        _export(copy, origin="third.test/audit")
    exported = _export(copy, origin=str(origin))
    verdict = verify_bundle(exported, allow_simulated=True)
    assert verdict.ok, verdict.table()


@pytest.mark.parametrize("year", [1, 999, 1000, 9999])
def test_window_times_keep_four_digit_years(year: int) -> None:
    when = datetime(year, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    text = iso(to_us(when))
    assert text.startswith(f"{year:04d}-01-02T03:04:05.000006") and instant_us(text) == to_us(when)
