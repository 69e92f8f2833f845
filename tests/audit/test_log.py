"""AuditLog on SQLite and PostgreSQL: receipts, proofs, tenancy, restart, faults, checkpoints."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    AuditLog,
    AuditUnavailable,
    LogStore,
    ProofError,
    Receipt,
    RecordNotFound,
    SignedCheckpoint,
    VerificationError,
    load_or_create_signing_key,
    verify_consistency,
    verify_log,
    verify_receipt,
)
from tests.audit.conftest import ORIGIN, make_record

pytestmark = pytest.mark.anyio


async def test_append_returns_verifiable_receipts(store_url: str, log_key: Ed25519PrivateKey) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        receipts = await asyncio.gather(*[log.append(make_record(i)) for i in range(50)])
        assert sorted(r.leaf_index for r in receipts) == list(range(50))
        checkpoint = await log.publish()
        assert checkpoint.size == 50
        for i, receipt in list(enumerate(receipts))[::7]:
            envelope = await log.get_record(receipt.record_id, tenant="tenant-a")
            proof = await log.inclusion_proof(receipt.leaf_index)
            header = Receipt.parse(receipt.to_header())
            statement = verify_receipt(header, envelope, checkpoint.note, proof.to_json(), log.vkey)
            assert statement["predicate"]["request_id"] == f"req-{i}"
            with pytest.raises(VerificationError):  # another leaf's proof
                other = await log.inclusion_proof((receipt.leaf_index + 1) % 50)
                verify_receipt(header, envelope, checkpoint.note, other, log.vkey)
            with pytest.raises(VerificationError):  # another log's key
                verify_receipt(header, envelope, checkpoint.note, proof,
                               f"{ORIGIN}+00000000+" + log.vkey.rsplit("+", 1)[1])  # fmt: skip
            for bad in ([], None, proof.hashes):  # not a proof, e.g. JSON from a crafted file
                with pytest.raises(VerificationError, match="inclusion proof"):
                    verify_receipt(header, envelope, checkpoint.note, bad, log.vkey)  # type: ignore[arg-type]
    finally:
        await log.close()


async def test_records_are_tenant_scoped(store_url: str, log_key: Ed25519PrivateKey) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        mine = await log.append(make_record(1, tenant="tenant-a"))
        assert await log.get_record(mine.record_id, tenant="tenant-a")
        for tenant, rid in (("tenant-b", mine.record_id), ("tenant-a", "0" * 32), (None, "../x")):
            with pytest.raises(RecordNotFound) as info:
                await log.get_record(rid, tenant=tenant)
            assert str(info.value) == "record_not_found: no such record"
        assert [r["kind"] for r in await log.request_records("tenant-a", "req-1")] == ["intent"]
        # Not a request id any record can hold (PostgreSQL refuses NUL in text): simply none.
        for request_id in ("req-1\x00", "a\x00b", "", "x" * 129, "req 1"):
            assert await log.request_records("tenant-a", request_id) == []
    finally:
        await log.close()


async def test_proof_requests_outside_the_tree(store_url: str, log_key: Ed25519PrivateKey) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        for i in range(5):
            await log.append(make_record(i))
        await log.publish()
        for call in (log.inclusion_proof(5), log.inclusion_proof(0, 6), log.consistency_proof(0),
                     log.consistency_proof(4, 6), log.consistency_proof(5, 4)):  # fmt: skip
            with pytest.raises(ProofError):
                await call
    finally:
        await log.close()


async def test_restart_keeps_identity_and_growth_is_consistent(
    store_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "audit-log.key"
    log = await AuditLog.open(store_url, load_or_create_signing_key(key_file), ORIGIN)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    for i in range(13):
        await log.append(make_record(i))
    await log.close()
    first = await _checkpoint_of(store_url, key_file)
    assert first.size == 13

    log = await AuditLog.open(store_url, load_or_create_signing_key(key_file), ORIGIN)
    try:
        assert (await log.checkpoint()).note == first.note
        receipt = await log.append(make_record(13))
        assert receipt.leaf_index == 13
        second = await log.publish()
        proof = await log.consistency_proof(first.size, second.size)
        verify_consistency(first.size, second.size, first.root_hash, second.root_hash, proof.hashes)
    finally:
        await log.close()


async def _checkpoint_of(url: str, key_file: Path) -> SignedCheckpoint:
    log = await AuditLog.open(url, load_or_create_signing_key(key_file), ORIGIN)
    try:
        return await log.checkpoint()
    finally:
        await log.close()


async def test_checkpoints_every_n(store_url: str, log_key: Ed25519PrivateKey) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN, checkpoint_every_n=10,
                              checkpoint_every_ms=60_000)  # fmt: skip
    try:
        for i in range(35):
            await log.append(make_record(i))
        await asyncio.sleep(0)
        sizes = [size for size, _, _ in log.store.checkpoints(log.log_id)]
        assert sizes[0] == 0 and len(sizes) >= 4 and sizes == sorted(sizes)
    finally:
        await log.close()
    reports = verify_log(LogStore.open(store_url))
    assert reports[0].records == 35 and reports[0].latest is not None
    assert reports[0].latest.size == 35


async def test_checkpoints_every_t_ms(store_url: str, log_key: Ed25519PrivateKey) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN, checkpoint_every_n=10_000,
                              checkpoint_every_ms=50)  # fmt: skip
    try:
        await log.append(make_record(0))
        for _ in range(100):
            if (await log.checkpoint()).size == 1:
                break
            await asyncio.sleep(0.02)
        assert (await log.checkpoint()).size == 1
    finally:
        await log.close()


class FaultInjectingTrigger:
    """Makes every INSERT into audit_records fail while set: a trigger in the database
    raises, so every connection gets a real driver error."""

    _SQLITE = ("CREATE TRIGGER inject_fault BEFORE INSERT ON audit_records "
               "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    _POSTGRES = (
        "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
        "CREATE TRIGGER inject_fault BEFORE INSERT ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION inject_fault()",
    )

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def set(self, on: bool) -> None:
        sqlite = self.store.is_sqlite
        if on:
            statements = (self._SQLITE,) if sqlite else self._POSTGRES
        else:
            statements = (("DROP TRIGGER inject_fault",) if sqlite else
                          ("DROP TRIGGER inject_fault ON audit_records", "DROP FUNCTION inject_fault()"))
        with self.store.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)


async def test_store_failure_raises_audit_unavailable(
    store_url: str, log_key: Ed25519PrivateKey
) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    fault = FaultInjectingTrigger(log.store)
    try:
        await log.append(make_record(0))
        fault.set(True)
        with pytest.raises(AuditUnavailable) as info:
            await log.append(make_record(1))
        assert info.value.code == "audit_unavailable" and info.value.status == 503
        assert str(info.value).startswith("audit_unavailable: ")
        fault.set(False)
        receipt = await log.append(make_record(2))
        assert receipt.leaf_index == 1
        assert (await log.publish()).size == 2
    finally:
        await log.close()
    assert verify_log(LogStore.open(store_url))[0].records == 2


async def test_two_logs_share_one_database(store_url: str) -> None:
    a = await AuditLog.open(store_url, Ed25519PrivateKey.generate(), "replica-a.test/log")
    b = await AuditLog.open(store_url, Ed25519PrivateKey.generate(), "replica-b.test/log")
    try:
        await asyncio.gather(*[log.append(make_record(i)) for i in range(4) for log in (a, b)])
        assert (await a.publish()).size == 4 and (await b.publish()).size == 4
    finally:
        await a.close()
        await b.close()
    reports = verify_log(LogStore.open(store_url))
    assert sorted(r.log_id for r in reports) == sorted([a.log_id, b.log_id])
    only_a = verify_log(LogStore.open(store_url), vkey=a.vkey)
    assert [r.log_id for r in only_a] == [a.log_id]


async def _watched_normal_log(url: str, log_key: Ed25519PrivateKey) -> tuple[AuditLog, list[Any]]:
    """A log at ``url`` whose queued appends are also collected in the returned list. No periodic
    publication: it would hold the lock and send an append to the queue at a moment the test
    does not choose."""
    log = await AuditLog.open(url, log_key, ORIGIN, checkpoint_every_n=10_000,
                              checkpoint_every_ms=600_000)  # fmt: skip
    queued: list[Any] = []
    submit = log._writer.submit
    log._writer.submit = lambda p: (queued.append(p) if p.sealed else None, submit(p))[1]
    return log, queued


async def test_inline_and_queued_appends_interleave(tmp_path: Path, log_key: Ed25519PrivateKey) -> None:
    """Without fsync, sparse appends to an idle writer commit inline on the caller's thread;
    appends to a busy writer (its lock held here by another thread) are queued. Indices stay
    dense and in commit order either way, also through a burst that mixes both."""
    url = f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal"
    log, queued_appends = await _watched_normal_log(url, log_key)
    writer = log._writer
    assert writer.inline
    try:
        first = []
        for i in range(5):
            await asyncio.sleep(0.002)  # sparse: each one commits inline
            first.append(await log.append(make_record(i)))
        assert [r.leaf_index for r in first] == list(range(5)) and not queued_appends
        held, release = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def hold() -> None:
            with writer.lock:
                loop.call_soon_threadsafe(held.set)
                asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)

        holder = loop.run_in_executor(None, hold)
        await held.wait()
        queued = [asyncio.ensure_future(log.append(make_record(i))) for i in range(5, 15)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in queued)  # the writer is busy: they wait in the queue
        release.set()
        await holder
        receipts = first + list(await asyncio.gather(*queued))
        assert len(queued_appends) == 10
        receipts += await asyncio.gather(*[log.append(make_record(i)) for i in range(15, 40)])
        assert sorted(r.leaf_index for r in receipts) == list(range(40))
        assert (await log.publish()).size == 40
    finally:
        await log.close()
    report = verify_log(LogStore.open(url))[0]
    assert report.records == 40 and report.latest is not None and report.latest.size == 40


async def test_inline_appends_are_integrated_without_queued_work(
    tmp_path: Path, log_key: Ed25519PrivateKey
) -> None:
    """Inline commits do not wake the writer; it still publishes them within the period."""
    url = f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal"
    log = await AuditLog.open(url, log_key, ORIGIN, checkpoint_every_n=10_000,
                              checkpoint_every_ms=50)  # fmt: skip
    try:
        for i in range(3):
            await log.append(make_record(i))
        for _ in range(100):
            if (await log.checkpoint()).size == 3:
                break
            await asyncio.sleep(0.02)
        assert (await log.checkpoint()).size == 3
    finally:
        await log.close()


async def test_closed_log_refuses_appends(store_url: str, log_key: Ed25519PrivateKey) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    await log.close()
    with pytest.raises(AuditUnavailable):
        await log.append(make_record(0))


async def test_open_rejects_bad_origin_and_foreign_url(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable):
        await AuditLog.open(f"sqlite:///{tmp_path}/a.db", Ed25519PrivateKey.generate(), "a b")
    with pytest.raises(AuditUnavailable):
        await AuditLog.open("mysql://x/y", Ed25519PrivateKey.generate(), ORIGIN)


async def test_appends_right_after_another_are_batched(tmp_path: Path, log_key: Ed25519PrivateKey) -> None:
    """An append that starts right after another one ended, or while a queued one still waits,
    goes to the group-commit queue instead of committing inline."""
    url = f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal"
    log, queued = await _watched_normal_log(url, log_key)
    writer = log._writer
    try:
        await asyncio.sleep(0.002)
        await log.append(make_record(0))
        assert not queued  # sparse: inline
        writer.last_append = time.monotonic() + 60  # as if an append had only just ended
        await log.append(make_record(1))
        assert len(queued) == 1
        writer.submitted += 1  # as if a queued append were still waiting for its commit
        await asyncio.sleep(0.002)
        second = asyncio.ensure_future(log.append(make_record(2)))
        await asyncio.sleep(0.05)
        assert len(queued) == 2
        assert (await second).leaf_index == 2
        writer.committed += 1  # the pretend-waiting append, settled (the writer is idle now)
    finally:
        await log.close()


async def test_a_checkpoint_whose_commit_acknowledgement_was_lost_is_adopted(
    store_url: str, log_key: Ed25519PrivateKey
) -> None:
    """The checkpoint's commit lands but the writer hears a failure (a connection lost after
    COMMIT): it must take the stored checkpoint as published, not sign that size again, which
    its primary key refuses, again and again."""
    log = await AuditLog.open(store_url, log_key, ORIGIN, checkpoint_every_n=10_000,
                              checkpoint_every_ms=50)  # fmt: skip
    store, lost = log.store, []
    integrate = store.integrate

    def ack_lost(log_id: str, nodes: Any, size: int, checkpoint: Any) -> None:
        integrate(log_id, nodes, size, checkpoint)
        if checkpoint is not None and size > 0 and not lost:
            lost.append(size)
            raise AuditUnavailable("injected: the commit landed, its acknowledgement was lost")

    store.integrate = ack_lost  # type: ignore[method-assign]
    try:
        await log.append(make_record(0))
        deadline = time.monotonic() + 10
        while (await log.checkpoint()).size != 1:
            assert time.monotonic() < deadline, "the stored checkpoint was never served"
            await asyncio.sleep(0.02)
        assert lost == [1]
        assert (await log.publish()).size == 1
        await log.append(make_record(1))
        assert (await log.publish()).size == 2
    finally:
        await log.close()
    sizes = [size for size, _, _ in LogStore.open(store_url).checkpoints(log.log_id)]
    assert sizes == [0, 1, 2]
