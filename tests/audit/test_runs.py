"""RowChecker.run: consecutive stored rows proved against a signed checkpoint at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from audit import AuditLog, LogStore, RowChecker, SignedCheckpoint, TreeReader, VerificationError
from tests.audit.conftest import ORIGIN, make_record

SIZE = 37  # several perfect subtrees either side of most runs


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A closed log of ``SIZE`` records with a checkpoint of all of them: (url, log id, vkey)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('runs') / 'audit.db'}"

    async def build() -> tuple[str, str]:
        log = await AuditLog.open(url, Ed25519PrivateKey.generate(), ORIGIN)
        for i in range(SIZE):
            await log.append(make_record(i))
        await log.publish()
        await log.close()
        return log.log_id, log.vkey

    log_id, vkey = asyncio.run(build())
    return url, log_id, vkey


def _checker(store: LogStore, log_id: str, vkey: str) -> RowChecker:
    latest = store.latest_checkpoint(log_id)
    assert latest is not None and latest[0] == SIZE
    return RowChecker(store, log_id, vkey, SignedCheckpoint.stored(*latest, vkey, ORIGIN))


_COLUMNS = ("leaf_index", "record_id", "envelope", "kind", "tenant", "request_id", "time_us",
            "decision", "channel", "endpoint", "model", "status")


def _row(row: Any, **changes: Any) -> Any:
    """A copy of a stored row with ``changes``, as a database writer would store it."""
    return type("Row", (), {**{c: getattr(row, c) for c in _COLUMNS}, **changes})()


def _prove(checker: RowChecker, rows: list[Any], start: int) -> None:
    run = checker.run(start)
    for row in rows:
        run.add(row)
    run.close()


@pytest.mark.parametrize("start", [0, 1, 5, 16, 31, 36])
def test_every_run_of_the_signed_leaves_proves(log: tuple[str, str, str], start: int) -> None:
    url, log_id, vkey = log
    store = LogStore.open(url, read_only=True)
    try:
        checker = _checker(store, log_id, vkey)
        rows = store.record_rows(log_id, 0, SIZE)
        for end in range(start, SIZE + 1):
            _prove(checker, rows[start:end], start)
    finally:
        store.close()


def test_a_run_refuses_a_row_that_is_not_the_signed_leaf(log: tuple[str, str, str]) -> None:
    """A genuine record in another leaf's place, columns and all, restates its own record but
    is not the signed tree's leaf there: only the range proof finds it."""
    url, log_id, vkey = log
    store = LogStore.open(url, read_only=True)
    try:
        checker = _checker(store, log_id, vkey)
        rows = store.record_rows(log_id, 0, SIZE)
        moved = _row(rows[9], leaf_index=8)
        with pytest.raises(VerificationError, match="not the leaves of the signed tree"):
            _prove(checker, [*rows[3:8], moved, *rows[9:20]], 3)
        with pytest.raises(VerificationError, match="gap at leaf 8"):
            _prove(checker, [*rows[3:8], rows[9]], 3)
        with pytest.raises(VerificationError, match="past the signed tree"):
            _prove(checker, [*rows[30:], rows[0]], 30)
    finally:
        store.close()


def test_a_run_refuses_a_row_whose_columns_differ(log: tuple[str, str, str]) -> None:
    url, log_id, vkey = log
    store = LogStore.open(url, read_only=True)
    try:
        checker = _checker(store, log_id, vkey)
        rows = store.record_rows(log_id, 0, SIZE)
        shifted = _row(rows[4], time_us=0)
        with pytest.raises(VerificationError, match="leaf 4: metadata columns differ"):
            _prove(checker, [*rows[2:4], shifted], 2)
    finally:
        store.close()


def test_rewritten_subtrees_beside_a_run_make_it_fail(tmp_path: Path,
                                                      log: tuple[str, str, str]) -> None:
    """The stored nodes either side of a run are not trusted: rewritten, the root differs."""
    url, log_id, vkey = log
    copy = tmp_path / "audit.db"
    copy.write_bytes(Path(url.removeprefix("sqlite:///")).read_bytes())
    store = LogStore.open(f"sqlite:///{copy}")
    try:
        rows = store.record_rows(log_id, 0, SIZE)
        with store.engine.begin() as conn:  # the subtree over leaves [0, 16)
            conn.execute(text("UPDATE audit_nodes SET hash = :h WHERE node_id = :n"),
                         {"h": bytes(32), "n": 4 * (1 << 48)})
        checker = _checker(store, log_id, vkey)
        with pytest.raises(VerificationError, match="not the leaves of the signed tree"):
            _prove(checker, rows[20:30], 20)
        _prove(checker, rows[0:SIZE], 0)  # a run over every leaf needs no stored node
    finally:
        store.close()


def test_proofs_read_together_are_the_proofs_read_one_by_one(log: tuple[str, str, str]) -> None:
    url, log_id, vkey = log
    store = LogStore.open(url, read_only=True)
    try:
        checker = _checker(store, log_id, vkey)
        rows = store.record_rows(log_id, 0, SIZE)
        picked = [(i, rows[i]) for i in (0, 1, 2, 7, 8, 15, 16, 31, 32, 36)]
        assert checker.placed_all(picked) == [checker.placed(row, i) for i, row in picked]
        reader = TreeReader(store, log_id)
        for size in (1, 2, 17, SIZE):
            indices = list(range(size))
            assert reader.inclusions(indices, size, SIZE) == [
                reader.inclusion(i, size, SIZE) for i in indices]
        with pytest.raises(VerificationError, match="leaf 8: not in the signed tree"):
            checker.placed_all([(7, rows[7]), (8, _row(rows[9], leaf_index=8))])
    finally:
        store.close()
