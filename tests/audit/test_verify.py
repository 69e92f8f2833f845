"""verify_log: a clean log verifies; tampering with any stored artefact is detected."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

import audit._verify as verify_module
from audit import AuditLog, LogStore, SignedCheckpoint, VerificationError, verify_log
from tests.audit.conftest import ORIGIN, make_record


@pytest.fixture
def populated(store_url: str) -> tuple[str, str, list[str]]:
    """A closed log of 40 records with several checkpoints; returns (url, vkey, notes)."""

    async def build() -> tuple[str, list[str]]:
        log = await AuditLog.open(store_url, Ed25519PrivateKey.generate(), ORIGIN,
                                  checkpoint_every_n=8)  # fmt: skip
        notes = []
        for i in range(40):
            await log.append(make_record(i))
            if i % 13 == 0:
                notes.append((await log.publish()).note)
        await log.close()
        return log.vkey, notes

    vkey, notes = asyncio.run(build())
    return store_url, vkey, notes


def test_clean_log_verifies_with_progress(populated: tuple[str, str, list[str]]) -> None:
    url, vkey, notes = populated
    seen: list[tuple[int, int]] = []
    reports = verify_log(LogStore.open(url), notes[1], lambda d, t: seen.append((d, t)), vkey=vkey)
    assert reports[0].records == 40 and reports[0].integrated == 40
    assert reports[0].checkpoints >= 5 and seen[-1] == (40, 40)


def test_a_log_verifies_while_it_keeps_growing(store_url: str) -> None:
    """``sealgate audit verify`` against a running gateway's store: records and checkpoints
    written during the check are no tampering; the log as it stood when the check began is
    what is verified."""

    async def run() -> list[int]:
        log = await AuditLog.open(store_url, Ed25519PrivateKey.generate(), ORIGIN,
                                  checkpoint_every_n=5, checkpoint_every_ms=10)
        for i in range(200):
            await log.append(make_record(i))
        await log.publish()
        appending = True

        async def append() -> None:
            i = 200
            while appending:
                await log.append(make_record(i))
                i += 1
                await asyncio.sleep(0.0005)

        task = asyncio.create_task(append())
        try:
            sizes = []
            for _ in range(3):
                reports = await asyncio.to_thread(verify_log, LogStore.open(store_url))
                sizes.append(reports[0].integrated)
        finally:
            appending = False
            await task
            await log.close()
        return sizes

    sizes = asyncio.run(run())
    assert sizes[0] >= 200 and sizes == sorted(sizes) and sizes[-1] > 200


def _tamper(url: str, sql: str) -> None:
    store = LogStore.open(url)
    with store.engine.begin() as conn:
        conn.execute(text(sql))
    store.close()


def _flip(url: str, table: str, column: str, where: str, offset: int = 50) -> None:
    """Flip one bit of a stored value (bytes or text), as an attacker with database access would."""
    store = LogStore.open(url)
    with store.engine.begin() as conn:
        value = conn.execute(text(f"SELECT {column} FROM {table} WHERE {where}")).scalar_one()
        raw = bytearray(value if isinstance(value, bytes | memoryview) else value.encode())
        raw[offset % len(raw)] ^= 0x01
        new = bytes(raw) if not isinstance(value, str) else raw.decode()
        conn.execute(text(f"UPDATE {table} SET {column} = :v WHERE {where}"), {"v": new})
    store.close()


TAMPERS: dict[str, Callable[[str], None]] = {
    "record envelope payload": lambda u: _flip(u, "audit_records", "envelope", "leaf_index = 7"),
    "record envelope signature": lambda u: _flip(
        u, "audit_records", "envelope", "leaf_index = 7", offset=-10),
    "record metadata": lambda u: _tamper(
        u, "UPDATE audit_records SET tenant = 'tenant-z' WHERE leaf_index = 3"),
    "record deleted": lambda u: _tamper(u, "DELETE FROM audit_records WHERE leaf_index = 20"),
    # SQLite keeps text in an integer column (a verdict, not a crash); PostgreSQL refuses it.
    "record time column": lambda u: _tamper(u, "UPDATE audit_records SET time_us = " + (
        "'x'" if u.startswith("sqlite") else "time_us + 1") + " WHERE leaf_index = 4"),
    "leaf hash": lambda u: _flip(u, "audit_nodes", "hash", "node_id = 5"),
    "interior node": lambda u: _flip(u, "audit_nodes", "hash", f"node_id = {2 * 2**48 + 1}"),
    "checkpoint note": lambda u: _tamper(
        u, "UPDATE audit_checkpoints SET note = REPLACE(note, '\n\n', '\nx\n\n') WHERE size = 14"),
    "checkpoint root column": lambda u: _flip(u, "audit_checkpoints", "root_hash", "size = 14"),
    "checkpoint signature": lambda u: _flip(u, "audit_checkpoints", "note", "size = 14", -8),
    # SQLite keeps any type in any column: each must fail verification, not crash it.
    "envelope stored as text": lambda u: _retype(
        u, "UPDATE audit_records SET envelope = CAST(envelope AS TEXT) WHERE leaf_index = 3",
        lambda: _flip(u, "audit_records", "envelope", "leaf_index = 3")),
    "node hash stored as text": lambda u: _retype(
        u, "UPDATE audit_nodes SET hash = 'abc' WHERE node_id = 0",
        lambda: _flip(u, "audit_nodes", "hash", "node_id = 0")),
    "checkpoint root stored as text": lambda u: _retype(
        u, "UPDATE audit_checkpoints SET root_hash = 'abc' WHERE size = 14",
        lambda: _flip(u, "audit_checkpoints", "root_hash", "size = 14")),
    "checkpoint size stored as text": lambda u: _retype(
        u, "UPDATE audit_checkpoints SET size = 'x' WHERE size = 14",
        lambda: _tamper(u, "UPDATE audit_checkpoints SET size = 15 WHERE size = 14")),
    "checkpoint note stored as binary": lambda u: _retype(
        u, "UPDATE audit_checkpoints SET note = CAST(note AS BLOB) WHERE size = 14",
        lambda: _flip(u, "audit_checkpoints", "note", "size = 14")),
    "integrated size stored as text": lambda u: _retype(
        u, "UPDATE audit_logs SET integrated_size = 'abc'",
        lambda: _tamper(u, "UPDATE audit_logs SET integrated_size = 41")),
    "record at a negative index": lambda u: _copy_row(u, 3, "-1", "log_id"),
    "record of no log": lambda u: _copy_row(u, 3, "leaf_index", "'00000000'"),
    "signed record stored twice": lambda u: _copy_row(u, 3, "40", "log_id"),
}  # fmt: skip


def _copy_row(url: str, leaf: int, index: str, log_id: str) -> None:
    """Store a copy of leaf ``leaf``'s row (its signed envelope too) at another index or log."""
    cols = "envelope, kind, tenant, request_id, time_us, decision, channel, endpoint, model, status"
    _tamper(url, f"INSERT INTO audit_records (log_id, leaf_index, record_id, {cols}) "
                 f"SELECT {log_id}, {index}, 'g' || SUBSTR(record_id, 2), {cols} "
                 f"FROM audit_records WHERE leaf_index = {leaf}")


def _retype(url: str, sqlite_sql: str, otherwise: Callable[[], None]) -> None:
    """Store a value of another type (SQLite only; a typed database refuses it, so there the
    same column is tampered with otherwise)."""
    if url.startswith("sqlite"):
        _tamper(url, sqlite_sql)
    else:
        otherwise()


def test_records_and_checkpoints_are_read_a_page_at_a_time(
        populated: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 (records and checkpoints alike) give the report of one page: a checkpoint is
    checked when the recomputed tree reaches its size, whichever page either falls in."""
    url, vkey, notes = populated
    whole = verify_log(LogStore.open(url), notes[1], vkey=vkey)
    monkeypatch.setattr(verify_module, "_CHUNK", 3)
    assert verify_log(LogStore.open(url), notes[1], vkey=vkey) == whole
    assert whole[0].checkpoints == LogStore.open(url).count_checkpoints(whole[0].log_id)
    assert whole[0].latest is not None and whole[0].latest.size == 40


@pytest.mark.parametrize("chunk", [3, 2000])
@pytest.mark.parametrize("what", list(TAMPERS))
def test_tampering_is_detected(populated: tuple[str, str, list[str]], what: str, chunk: int,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, vkey, _ = populated
    TAMPERS[what](url)
    monkeypatch.setattr(verify_module, "_CHUNK", chunk)
    with pytest.raises(VerificationError):
        verify_log(LogStore.open(url), vkey=vkey)


def test_checkpoint_replaced_by_a_forgery_is_detected(
    populated: tuple[str, str, list[str]],
) -> None:
    """A checkpoint swapped for one signed by another key (same origin) is caught."""
    url, vkey, _ = populated
    store = LogStore.open(url)
    log_id = store.logs()[0][0]
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_checkpoints WHERE size = 40"))
    key = Ed25519PrivateKey.generate()  # an attacker without the log key
    forged = SignedCheckpoint.sign(ORIGIN, 40, b"\x00" * 32, key)
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_checkpoints VALUES (:l, 40, :r, :n, 0)"),
                     {"l": log_id, "r": forged.root_hash, "n": forged.note})  # fmt: skip
    with pytest.raises(VerificationError):
        verify_log(store, vkey=vkey)


def test_from_checkpoint_of_a_different_history_fails(
    populated: tuple[str, str, list[str]]
) -> None:
    url, vkey, _ = populated
    with pytest.raises(VerificationError):  # signed by another key: rejected
        other = SignedCheckpoint.sign(ORIGIN, 5, b"\x01" * 32, Ed25519PrivateKey.generate())
        verify_log(LogStore.open(url), other.note, vkey=vkey)


def test_pinned_vkey_must_match(populated: tuple[str, str, list[str]]) -> None:
    url, _, _ = populated
    stranger = Ed25519PrivateKey.generate().public_key()
    from audit._note import vkey_for

    with pytest.raises(VerificationError):
        verify_log(LogStore.open(url), vkey=vkey_for(ORIGIN, stranger))


def _wipe(url: str) -> None:
    for table in ("audit_records", "audit_nodes", "audit_checkpoints", "audit_logs"):
        _tamper(url, f"DELETE FROM {table}")


def test_from_checkpoint_needs_its_log(populated: tuple[str, str, list[str]]) -> None:
    """A kept checkpoint is checked even when its log is gone or replaced by another one."""
    url, _, notes = populated
    _wipe(url)
    with pytest.raises(VerificationError, match="holds no log"):
        verify_log(LogStore.open(url), notes[-1])

    async def other_log(origin: str) -> None:
        log = await AuditLog.open(url, Ed25519PrivateKey.generate(), origin)
        await log.append(make_record(0))
        await log.close()

    asyncio.run(other_log("evil.example/log"))  # another origin and key
    with pytest.raises(VerificationError, match="origin"):
        verify_log(LogStore.open(url), notes[-1])
    asyncio.run(other_log(ORIGIN))  # the same origin, another key
    with pytest.raises(VerificationError, match="does not verify under the key"):
        verify_log(LogStore.open(url), notes[-1])


def test_from_checkpoint_detects_a_truncated_log(populated: tuple[str, str, list[str]]) -> None:
    url, vkey, notes = populated
    kept = SignedCheckpoint.parse(notes[-1], vkey)
    _tamper(url, f"DELETE FROM audit_checkpoints WHERE size >= {kept.size}")
    with pytest.raises(VerificationError, match="not an extension"):
        verify_log(LogStore.open(url), kept.note, vkey=vkey)
    assert verify_log(LogStore.open(url), notes[0], vkey=vkey)  # an older one still holds


def test_from_checkpoint_of_another_log_with_a_pinned_key(
    populated: tuple[str, str, list[str]],
) -> None:
    url, vkey, _ = populated
    other = SignedCheckpoint.sign("other.test/log", 3, b"\x01" * 32, Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError, match="origin"):
        verify_log(LogStore.open(url), other.note, vkey=vkey)
