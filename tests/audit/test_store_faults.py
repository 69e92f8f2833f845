"""Faults of the SQLite store under a running log (fault injection): a connection that opened
read-only, the database file removed, a lock held by another process, a store that answers
nonsense, and a writer thread that ends on an unexpected error. Each must fail closed, say so,
never hang, and recover once the fault is gone where the log can still be continued."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event

from audit import AuditError, AuditLog, AuditUnavailable, LogStore, verify_log
from audit._writer import LogWriter
from tests.audit.conftest import ORIGIN, make_record

pytestmark = pytest.mark.anyio
SYNC = ["full", "normal"]  # appends queued to the writer thread; or committed inline when idle


def _url(tmp_path: Path, sync: str) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}?synchronous={sync}"


async def _append(log: AuditLog, i: int) -> Any:
    await asyncio.sleep(0.002)  # sparse: an idle writer lets a synchronous=normal append inline
    return await asyncio.wait_for(log.append(make_record(i)), 20)


@pytest.mark.parametrize("sync", SYNC)
async def test_publication_resumes_after_connections_opened_read_only(
        tmp_path: Path, log_key: Ed25519PrivateKey, sync: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A SQLite connection opened while its file could not be written stays read-only for good;
    the pool would hand it out to every later publication. After a failure the store's
    connections are opened afresh, so checkpoints resume once the fault is gone."""
    log = await AuditLog.open(_url(tmp_path, sync), log_key, ORIGIN, checkpoint_every_ms=50)
    read_only = [True]

    def connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        if read_only[0]:  # fault injection: the file cannot be written at connect time
            return sqlite3.connect(f"file:{tmp_path / 'audit.db'}?mode=ro", uri=True,
                                   check_same_thread=False)
        return None

    event.listen(log.store.engine, "do_connect", connect)
    logged: list[str] = []

    async def until(what: str, done: Any) -> None:
        deadline = time.monotonic() + 20
        while not await done():
            assert time.monotonic() < deadline, f"{what} never happened: {logged}"
            await asyncio.sleep(0.02)

    async def said(event_name: str) -> bool:
        logged.append(capsys.readouterr().out)
        return event_name in "".join(logged)

    try:
        await _append(log, 0)
        log.store.engine.dispose()  # the next pooled connections are opened under the fault
        await _append(log, 1)  # the kept append connection still writes
        await until("a failed publication", lambda: said("checkpoint_not_published"))
        read_only[0] = False
        for i in (2, 3):
            await _append(log, i)

        async def published() -> bool:
            return (await log.checkpoint()).size == 4

        await until("a checkpoint of every record", published)
        await until("the end of the outage", lambda: said("checkpoint_published_again"))
    finally:
        await asyncio.wait_for(log.close(), 20)
    assert verify_log(LogStore.open(_url(tmp_path, sync)))[0].records == 4
    assert "".join(logged).count("checkpoint_not_published") == 1, logged


@pytest.mark.parametrize("sync", SYNC)
async def test_a_removed_database_file_refuses_every_append(
        tmp_path: Path, log_key: Ed25519PrivateKey, sync: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Removed under a running log, the file's open connections would go on writing records
    nobody can read again, acknowledged as durable: every append is refused instead, and no
    new empty database is created in its place."""
    log = await AuditLog.open(_url(tmp_path, sync), log_key, ORIGIN)
    try:
        await _append(log, 0)
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"audit.db{suffix}").unlink(missing_ok=True)
        for i in (1, 2):
            with pytest.raises(AuditUnavailable, match="removed or replaced"):
                await _append(log, i)
        with pytest.raises(AuditUnavailable):
            await log.publish()
    finally:
        with pytest.raises(AuditUnavailable):
            await asyncio.wait_for(log.close(), 20)  # its final checkpoint cannot be written
    assert not (tmp_path / "audit.db").exists()
    assert "database_file_replaced" in capsys.readouterr().out


@pytest.mark.parametrize("sync", SYNC)
async def test_a_lock_held_by_another_process_never_blocks_the_event_loop(
        tmp_path: Path, log_key: Ed25519PrivateKey, sync: str) -> None:
    """An append waits for a lock another process holds (a backup, an operator's ``sqlite3``
    session) on the writer thread, never on the event loop: the loop keeps serving, and the
    append lands once the lock is released."""
    log = await AuditLog.open(_url(tmp_path, sync), log_key, ORIGIN)
    other = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    try:
        await _append(log, 0)
        other.execute("BEGIN IMMEDIATE")
        appending = asyncio.create_task(_append(log, 1))
        stalls = []
        for _ in range(30):
            started = time.monotonic()
            await asyncio.sleep(0.01)
            stalls.append(time.monotonic() - started)
        assert not appending.done()
        other.execute("ROLLBACK")
        assert (await appending).leaf_index == 1
        assert max(stalls) < 0.2, stalls  # a blocked loop stalls until the lock is released
    finally:
        other.close()
        await asyncio.wait_for(log.close(), 20)
    assert verify_log(LogStore.open(_url(tmp_path, sync)))[0].records == 2


@pytest.mark.parametrize("sync", SYNC)
async def test_a_store_that_answers_nonsense_is_unavailable_not_an_error(
        tmp_path: Path, log_key: Ed25519PrivateKey, sync: str) -> None:
    """Rows written by something else (a record at the next leaf index; one whose index is
    text): a failed append is ``AuditUnavailable`` (a 503, nothing forwarded), the writer keeps
    serving, and closing returns."""
    log = await AuditLog.open(_url(tmp_path, sync), log_key, ORIGIN)
    try:
        await _append(log, 0)
        db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        row = db.execute("SELECT * FROM audit_records WHERE leaf_index = 0").fetchone()
        columns = [c[1] for c in db.execute("PRAGMA table_info(audit_records)")]
        for leaf, record_id in ((1, "a" * 32), ("x", "b" * 32)):
            values = dict(zip(columns, row, strict=True), leaf_index=leaf, record_id=record_id)
            db.execute(f"INSERT INTO audit_records ({', '.join(values)}) "
                       f"VALUES ({', '.join('?' * len(values))})", list(values.values()))
        db.close()
        for i in (1, 2, 3):
            with pytest.raises(AuditUnavailable):
                await _append(log, i)
        assert log._writer.thread.is_alive()
    finally:
        try:
            await asyncio.wait_for(log.close(), 20)
        except AuditError:
            pass  # the stored log cannot be continued: no final checkpoint


async def test_a_writer_that_ends_on_an_unexpected_error_fails_closed(
        tmp_path: Path, log_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fault injection: the writer thread ends on an error nobody expected. What waits for it
    and every later append fail (503) at once instead of hanging, and closing returns."""
    log = await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN)

    def broken(self: LogWriter, items: Any) -> None:
        raise RuntimeError("injected")

    try:
        await _append(log, 0)
        monkeypatch.setattr(LogWriter, "_write", broken)
        with pytest.raises(AuditUnavailable, match="writer stopped"):
            await _append(log, 1)
        monkeypatch.undo()
        for i in (2, 3):
            with pytest.raises(AuditUnavailable):
                await _append(log, i)
    finally:
        with pytest.raises(AuditUnavailable):
            await asyncio.wait_for(log.close(), 20)
    assert not log._writer.thread.is_alive()
    assert log._writer.wal_thread is not None and not log._writer.wal_thread.is_alive()
    assert "audit_writer_failed" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "audit.db")


async def _signed_log(tmp_path: Path, key: Ed25519PrivateKey, records: int) -> Path:
    """A log of ``records`` records whose every checkpoint the witness recorded; closed."""
    witness = tmp_path / "keys" / "witness.json"
    log = await AuditLog.open(_url(tmp_path, "full"), key, ORIGIN, witness=witness)
    for i in range(records):
        await log.append(make_record(i))
    await log.close()
    return witness


async def test_a_store_behind_the_last_signed_checkpoint_is_refused_at_start(
        tmp_path: Path, log_key: Ed25519PrivateKey) -> None:
    """Removed, or replaced by an older copy, the store would start the log again at a smaller
    size under the same key (a rollback the key would sign): the witness kept beside the key
    says what was signed last, and the log is refused instead."""
    db = tmp_path / "audit.db"
    witness = await _signed_log(tmp_path, log_key, 3)
    older = tmp_path / "older.db"
    sqlite3.connect(db).backup(sqlite3.connect(older))
    log = await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)
    for i in range(3, 6):
        await log.append(make_record(i))
    await log.close()
    entry = json.loads(witness.read_text())
    assert [e["size"] for e in entry.values()] == [6]

    older.replace(db)  # an older copy restored over the live log
    with pytest.raises(AuditUnavailable, match="store_behind_witness"):
        await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)
    db.unlink()  # the store removed: a new empty database would start at size 0
    with pytest.raises(AuditUnavailable, match="store_behind_witness"):
        await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)
    # A new log (a new key) starts in the new store; the witness keeps the old log's entry.
    fresh = await AuditLog.open(_url(tmp_path, "full"), Ed25519PrivateKey.generate(), ORIGIN,
                                witness=witness)
    await fresh.append(make_record(0))
    await fresh.close()
    assert sorted(e["size"] for e in json.loads(witness.read_text()).values()) == [1, 6]


async def test_a_store_with_another_tree_at_the_signed_size_is_refused(
        tmp_path: Path, log_key: Ed25519PrivateKey) -> None:
    """Same size, other records: the witness's root is not the stored tree's."""
    witness = await _signed_log(tmp_path, log_key, 2)
    entries = json.loads(witness.read_text())
    for entry in entries.values():
        entry["root"] = "00" * 32
    witness.write_text(json.dumps(entries))
    with pytest.raises(AuditUnavailable, match="store_not_the_witness"):
        await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)


async def test_a_witness_one_publication_behind_is_accepted(
        tmp_path: Path, log_key: Ed25519PrivateKey) -> None:
    """The witness is written after the store: one left behind (a power loss, a full disk)
    names a smaller checkpoint, which the stored tree extends."""
    witness = await _signed_log(tmp_path, log_key, 3)
    behind = witness.read_text()
    log = await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)
    for i in range(3, 8):
        await log.append(make_record(i))
    await log.close()
    witness.write_text(behind)
    log = await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)
    assert (await log.checkpoint()).size == 8
    await log.close()


@pytest.mark.parametrize("text", ["not json", "[]", '{"%s": {"size": "3", "root": "00"}}'])
async def test_an_unreadable_witness_is_refused(
        tmp_path: Path, log_key: Ed25519PrivateKey, text: str) -> None:
    """Only the gateway writes it, whole: anything else there is a reason to stop."""
    witness = await _signed_log(tmp_path, log_key, 1)
    log_id = next(iter(json.loads(witness.read_text())))
    witness.write_text(text.replace("%s", log_id))
    with pytest.raises(AuditUnavailable, match="checkpoint_witness_unreadable"):
        await AuditLog.open(_url(tmp_path, "full"), log_key, ORIGIN, witness=witness)
