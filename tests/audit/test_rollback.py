"""The writer never continues a stored log that does not extend the last checkpoint it signed.

Someone with database access can truncate, rewrite or add to the tables; the writer must then
refuse (fail closed) rather than sign a smaller checkpoint (a rollback), another root (a fork)
or a tree over rows its key never signed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from structlog.testing import capture_logs

from audit import AuditLog, AuditUnavailable, LogStore
from audit._merkle import node_id
from tests.audit.conftest import ORIGIN, make_record

pytestmark = pytest.mark.anyio


def _sql(url: str, *statements: str, **params: object) -> None:
    store = LogStore.open(url)
    try:
        with store.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params)
    finally:
        store.close()


def _truncate(url: str, keep: int) -> None:
    """Drop every leaf from ``keep`` on, the nodes covering them and the integrated size, but
    keep the checkpoints (as an insider hiding records would)."""
    kept = [node_id(level, i) for level in range(8) for i in range(keep >> level)]
    _sql(url, f"DELETE FROM audit_records WHERE leaf_index >= {keep}",
         f"DELETE FROM audit_nodes WHERE node_id NOT IN ({', '.join(map(str, kept))})",
         f"UPDATE audit_logs SET integrated_size = {keep}")


def _rewrite_node(url: str, level: int = 3, index: int = 0) -> None:
    """Replace the stored hash of subtree ``index`` at ``level`` (by default the one over
    leaves [0, 8))."""
    _sql(url, "UPDATE audit_nodes SET hash = :h WHERE node_id = :n", h=bytes(32),
         n=node_id(level, index))


def _copy_row(url: str, leaf: int, envelope: bytes | None = None) -> None:
    """Append a copy of leaf ``leaf``'s row as the next leaf, its envelope replaced when given
    (as an insider adding a record the log key never signed, or replaying one it did)."""
    cols = ("kind, tenant, request_id, time_us, decision, channel, endpoint, model, status")
    _sql(url, "INSERT INTO audit_records (log_id, leaf_index, record_id, envelope, " + cols + ") "
         "SELECT log_id, (SELECT MAX(leaf_index) + 1 FROM audit_records), 'g' || SUBSTR(record_id, 2), "
         "COALESCE(:envelope, envelope), " + cols + " FROM audit_records WHERE leaf_index = :leaf",
         leaf=leaf, envelope=envelope)


async def _log_of(url: str, key: Ed25519PrivateKey, records: int, unpublished: int = 0) -> int:
    """A closed log of ``records`` records whose last published checkpoint is of
    ``records - unpublished`` leaves; returns that size."""
    log = await AuditLog.open(url, key, ORIGIN, checkpoint_every_n=10_000, checkpoint_every_ms=600_000)
    for i in range(records - unpublished):
        await log.append(make_record(i))
    published = (await log.publish()).size
    for i in range(unpublished):
        await log.append(make_record(100 + i))
    await log.close()
    if unpublished:  # the closing checkpoint is lost too
        _sql(url, f"DELETE FROM audit_checkpoints WHERE size > {published}")
    return published


TAMPERS: dict[str, tuple[int, Callable[[str], None], str]] = {
    "tail truncated": (0, lambda url: _truncate(url, 4), "tree_smaller_than_checkpoint"),
    "same size, another root": (0, _rewrite_node, "tree_not_an_extension"),
    "larger, not an extension": (2, _rewrite_node, "tree_not_an_extension"),
    # the subtree over leaves [8, 10), past the last checkpoint
    "a node past the checkpoint rewritten": (2, lambda url: _rewrite_node(url, 1, 4),
                                             "tree_not_the_records"),
    "an unsigned record added": (0, lambda url: _copy_row(url, 3, b"PLAINTEXT PROMPT"),
                                 "record_unverifiable"),
    "a signed record replayed": (0, lambda url: _copy_row(url, 3), "record_repeated"),
}


@pytest.mark.parametrize("what", list(TAMPERS))
async def test_restart_refuses_a_log_that_does_not_extend_its_checkpoint(
    store_url: str, log_key: Ed25519PrivateKey, what: str
) -> None:
    unpublished, tamper, reason = TAMPERS[what]
    published = await _log_of(store_url, log_key, 10, unpublished)
    tamper(store_url)
    with capture_logs() as events, pytest.raises(AuditUnavailable, match=reason):
        await AuditLog.open(store_url, log_key, ORIGIN)
    refused = [e for e in events if e["event"] == "audit_log_refused"]
    assert refused and refused[0]["reason"] == reason and refused[0]["log_level"] == "error"
    store = LogStore.open(store_url)
    try:  # nothing was signed over the tampered tree
        assert [size for size, _root, _note in store.checkpoints(store.logs()[0][0])][-1] == published
    finally:
        store.close()


async def test_reload_refuses_a_record_added_under_the_running_writer(
    store_url: str, log_key: Ed25519PrivateKey
) -> None:
    # The writer reads the database again after a failed commit (here: the row an insider
    # added took the next leaf index); it must not sign a checkpoint over that row.
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        for i in range(6):
            await log.append(make_record(i))
        published = (await log.publish()).size
        _copy_row(store_url, 2, b"PLAINTEXT PROMPT")
        with pytest.raises(AuditUnavailable):
            await log.append(make_record(6))
        with pytest.raises(AuditUnavailable, match="record_unverifiable"):
            await log.publish()
        with pytest.raises(AuditUnavailable, match="does not extend"):
            await log.append(make_record(7))
        assert (await log.checkpoint()).size == published
    finally:
        with pytest.raises(AuditUnavailable):
            await log.close()


async def test_reload_after_truncation_refuses_to_publish_or_append(
    store_url: str, log_key: Ed25519PrivateKey
) -> None:
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        for i in range(10):
            await log.append(make_record(i))
        assert (await log.publish()).size == 10
        _truncate(store_url, 4)
        log._writer.reload = True  # as after a failed commit: the database is read again
        with pytest.raises(AuditUnavailable, match="tree_smaller_than_checkpoint"):
            await log.publish()
        with pytest.raises(AuditUnavailable, match="does not extend"):
            await log.append(make_record(10))
        assert (await log.checkpoint()).size == 10
    finally:
        with pytest.raises(AuditUnavailable):
            await log.close()  # its final publication is refused too
