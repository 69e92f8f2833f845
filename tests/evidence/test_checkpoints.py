"""The checkpoints an export picks: an anchor, then a bounded, spread set, latest last; found
with index seeks, never by reading every checkpoint a busy log has published."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, LogStore, TreeReader, verify_consistency
from proxy.evidence import ExportOptions, _export
from tests.audit.conftest import ORIGIN, make_record


@pytest.fixture(scope="module")
def many_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A log with one checkpoint per record, 40 of them: (database URL, log id)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('spread') / 'audit.db'}?synchronous=normal"

    async def grow() -> str:
        log = await AuditLog.open(url, Ed25519PrivateKey.generate(), ORIGIN)
        try:
            for i in range(40):
                await log.append(make_record(i))
                await log.publish()
            return log.log_id
        finally:
            await log.close()

    return url, asyncio.run(grow())


@pytest.mark.parametrize("first_leaf", [0, 1, 17, 39, 40])
def test_export_checkpoints_are_bounded_spread_and_consistent(
        many_checkpoints: tuple[str, str], first_leaf: int, monkeypatch: pytest.MonkeyPatch) -> None:
    url, log_id = many_checkpoints
    monkeypatch.setattr(_export, "MAX_CHECKPOINTS", 5)
    store = LogStore.open(url, read_only=True)
    limits: list[Any] = []
    everything = store.checkpoints

    def bounded(*args: Any, **kwargs: Any) -> list[tuple[int, bytes, str]]:
        limits.append(kwargs.get("limit"))
        return everything(*args, **kwargs)

    monkeypatch.setattr(store, "checkpoints", bounded)
    try:
        picked = _export._checkpoints(store, log_id, first_leaf, everything(log_id)[-1])
        sizes = [size for size, _ in picked]
        all_sizes = [size for size, _, _ in everything(log_id) if size > 0]
        assert None not in limits  # no read of every checkpoint
        assert sizes == sorted(set(sizes)) and sizes[-1] == all_sizes[-1]  # latest last
        anchors = [s for s in all_sizes if s <= first_leaf]
        after = [s for s in sizes if s > first_leaf]
        assert sizes[:len(sizes) - len(after)] == anchors[-1:]  # the anchor, when there is one
        assert len(after) == min(5, len([s for s in all_sizes if s > first_leaf]))
        roots = {size: root for size, root, _ in everything(log_id)}
        reader = TreeReader(store, log_id)
        for old, new in itertools.pairwise(sizes):  # what the bundle proves, pair by pair
            proof = reader.consistency(old, new, new)
            verify_consistency(old, new, roots[old], roots[new], proof.hashes)
    finally:
        store.close()


def test_an_export_of_a_log_without_checkpoints_fails(tmp_path: Path) -> None:
    url, key = f"sqlite:///{tmp_path / 'audit.db'}", Ed25519PrivateKey.generate()

    async def empty() -> None:  # a log, nothing published
        await (await AuditLog.open(url, key, ORIGIN)).close()

    asyncio.run(empty())
    store = LogStore.open(url, read_only=True)
    window = ExportOptions(datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    try:
        with pytest.raises(_export.ExportFailed, match="no published checkpoint"):
            _export.build_bundle(store, tmp_path, key, window)
    finally:
        store.close()
