"""A signed record names its log: a record copied into another log that shares the signing key
(another origin, or another replica's log) verifies nowhere but in its own log.

The DSSE ``keyid`` beside a signature is not signed, so the name has to be in the statement.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from audit import (
    AuditLog,
    AuditUnavailable,
    InvalidRecord,
    LogStore,
    Receipt,
    Record,
    RowChecker,
    SignedCheckpoint,
    VerificationError,
    verify_log,
    verify_receipt,
)
from audit._merkle import leaf_hash
from tests.audit.conftest import ORIGIN, make_record

pytestmark = pytest.mark.anyio

OTHER = "sealgate.test/other"
_COLS = "kind, tenant, request_id, time_us, decision, channel, endpoint, model, status"


def _statement(envelope: bytes) -> dict[str, object]:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))  # type: ignore[no-any-return]


async def _two_logs(url: str, key: Ed25519PrivateKey) -> tuple[str, str]:
    """Two closed logs on one key (origins ``ORIGIN`` and ``OTHER``) of 4 and 1 records, each
    published; returns their log ids."""
    ids = []
    for origin, count in ((ORIGIN, 4), (OTHER, 1)):
        log = await AuditLog.open(url, key, origin)
        for i in range(count):
            await log.append(make_record(i if origin == ORIGIN else 50))
        await log.publish()
        ids.append(log.log_id)
        await log.close()
    return ids[0], ids[1]


def _copy_across(url: str, source: str, target: str) -> None:
    """Append ``source``'s leaf 0 to ``target`` as its next leaf, keyid and all, as a database
    writer would."""
    store = LogStore.open(url)
    try:
        with store.engine.begin() as conn:
            row = conn.execute(text(f"SELECT envelope, {_COLS} FROM audit_records "
                                    "WHERE log_id = :s AND leaf_index = 0"), {"s": source}).one()
            envelope = json.loads(row[0])
            envelope["signatures"][0]["keyid"] = target  # the keyid is not signed
            size = conn.execute(text("SELECT MAX(leaf_index) + 1 FROM audit_records "
                                     "WHERE log_id = :t"), {"t": target}).scalar_one()
            conn.execute(
                text(f"INSERT INTO audit_records (log_id, leaf_index, record_id, envelope, {_COLS}) "
                     "VALUES (:t, :i, :r, :e, :kind, :tenant, :request_id, :time_us, :decision, "
                     ":channel, :endpoint, :model, :status)"),
                {"t": target, "i": size, "r": "f" * 32, "e": json.dumps(envelope).encode(),
                 **dict(zip(_COLS.split(", "), row[1:], strict=True))})
    finally:
        store.close()


async def test_every_record_names_the_log_that_signed_it(store_url: str, log_key: Ed25519PrivateKey) -> None:
    ours, other = await _two_logs(store_url, log_key)
    store = LogStore.open(store_url)
    try:
        for log_id, count in ((ours, 4), (other, 1)):
            rows = store.record_rows(log_id, 0, 10)
            assert len(rows) == count
            assert {_statement(row.envelope)["predicate"]["log_id"] for row in rows} == {log_id}  # type: ignore[index]
    finally:
        store.close()


async def test_a_record_copied_from_another_log_on_the_same_key_is_refused(
    store_url: str, log_key: Ed25519PrivateKey
) -> None:
    ours, other = await _two_logs(store_url, log_key)
    _copy_across(store_url, other, ours)
    # The writer does not integrate it (no checkpoint is signed over it) ...
    with pytest.raises(AuditUnavailable, match="record_unverifiable"):
        await AuditLog.open(store_url, log_key, ORIGIN)
    # ... and a verifier refuses the store that holds it.
    with pytest.raises(VerificationError, match="leaf 4: the record was signed for another log"):
        verify_log(LogStore.open(store_url))


async def test_a_receipt_for_a_record_of_another_log_is_refused(log_key: Ed25519PrivateKey,
                                                                tmp_path: Path) -> None:
    log = await AuditLog.open(f"sqlite:///{tmp_path}/audit.db", log_key, ORIGIN)
    try:
        receipt = await log.append(make_record(0))
        envelope = await log.get_record(receipt.record_id, tenant="tenant-a")
    finally:
        await log.close()
    # The same record presented as the only leaf of a log of another origin on the same key,
    # with a checkpoint that log's key really signed over it.
    other = await AuditLog.open(f"sqlite:///{tmp_path}/other.db", log_key, OTHER)
    await other.close()
    relabelled = json.loads(envelope)
    relabelled["signatures"][0]["keyid"] = other.log_id
    moved = json.dumps(relabelled).encode()
    checkpoint = SignedCheckpoint.sign(OTHER, 1, leaf_hash(moved), log_key)
    forged = Receipt(receipt.record_id, 0, receipt.signature, other.log_id)
    proof = {"index": 0, "size": 1, "hashes": []}
    with pytest.raises(VerificationError, match="signed for another log"):
        verify_receipt(forged, moved, checkpoint.note, proof, other.vkey)
    # Its own log's checkpoint over the same single leaf verifies.
    own = SignedCheckpoint.sign(ORIGIN, 1, leaf_hash(envelope), log_key)
    statement = verify_receipt(receipt, envelope, own.note, proof, log.vkey)
    assert statement["predicate"]["log_id"] == log.log_id


def test_a_record_names_one_log_only() -> None:
    record = make_record(0).in_log("0a1b2c3d")
    assert record.in_log("0a1b2c3d") == record
    with pytest.raises(InvalidRecord, match="another log"):
        record.in_log("00000000")
    with pytest.raises(InvalidRecord, match="log id"):
        make_record(0).in_log("0A1B2C3D")


def _unnamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records signed as before they named their log (no ``log_id``)."""
    monkeypatch.setattr(Record, "in_log", lambda self, log_id: self)


async def test_a_log_written_before_records_named_it_still_verifies_and_grows(
        store_url: str, log_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its unnamed records come first; the upgraded writer goes on with named ones, including
    unnamed records committed before the upgrade but never signed into a checkpoint."""
    with monkeypatch.context() as old:
        _unnamed(old)
        log = await AuditLog.open(store_url, log_key, ORIGIN, checkpoint_every_n=10_000,
                                  checkpoint_every_ms=600_000)
        for i in range(3):
            await log.append(make_record(i))
        await log.publish()
        await log.append(make_record(3))  # committed, in no checkpoint: a crash after it
        await log.close()
    store = LogStore.open(store_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_checkpoints WHERE size > 3"))
    finally:
        store.close()
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        receipt = await log.append(make_record(4))
        checkpoint = await log.publish()
        named = await log.get_record((await log.append(make_record(5))).record_id, tenant="tenant-a")
        assert _statement(named)["predicate"]["log_id"] == log.log_id  # type: ignore[index]
        envelope = await log.get_record(receipt.record_id, tenant="tenant-a")
        proof = await log.inclusion_proof(receipt.leaf_index)
        verify_receipt(receipt, envelope, checkpoint.note, proof.to_json(), log.vkey)
    finally:
        await log.close()
    [report] = verify_log(LogStore.open(store_url))
    assert (report.records, report.integrated) == (6, 6)
    store = LogStore.open(store_url)
    try:  # as an evidence export reads it: one run over the leaves, then each with its proof
        latest = store.latest_checkpoint(log.log_id)
        assert latest is not None and latest[0] == 6
        checker = RowChecker(store, log.log_id, log.vkey, SignedCheckpoint.stored(*latest, log.vkey))
        rows = store.record_rows(log.log_id, 0, 6)
        run = checker.run(0)
        for row in rows:
            run.add(row)
        run.close()
        assert len(checker.placed_all(list(enumerate(rows)))) == 6
    finally:
        store.close()


async def test_an_unnamed_record_after_a_named_one_is_refused(
        store_url: str, log_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a log's records name it, one that does not is a copy from a log written before:
    the writer does not integrate it, and a verifier refuses the store holding it."""
    ours, _ = await _two_logs(store_url, log_key)
    with monkeypatch.context() as old:
        _unnamed(old)
        legacy = await AuditLog.open(store_url, log_key, "sealgate.test/legacy")
        await legacy.append(make_record(70))
        await legacy.close()
    _copy_across(store_url, legacy.log_id, ours)
    with pytest.raises(AuditUnavailable, match="record_unverifiable"):
        await AuditLog.open(store_url, log_key, ORIGIN)
    with pytest.raises(VerificationError, match="leaf 4: the record was signed for another log"):
        verify_log(LogStore.open(store_url))
