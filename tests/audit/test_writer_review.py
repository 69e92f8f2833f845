"""The append connection kept open across appends, and the read-only open of stored logs."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.pool import _ConnectionFairy

from audit import AuditLog, AuditUnavailable, LogStore, verify_log
from tests.audit.conftest import ORIGIN, make_record
from tests.conftest import need

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


def _close_under_it(store: LogStore) -> None:
    """End the kept append connection from outside, as a server restart, a failover or an idle
    timeout does: PostgreSQL terminates its backend; on SQLite (fault injection) the driver
    connection is closed beneath the pool."""
    kept = store._appenders.get(True) or store._appenders.get(False)  # inline, or the writer's
    assert kept is not None and kept.driver_connection is not None
    if store.is_sqlite:
        kept.driver_connection.close()
        return
    with store.engine.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:p)"),
                     {"p": kept.driver_connection.info.backend_pid})


async def test_a_kept_connection_closed_under_it_is_replaced(
    store_url: str, log_key: Ed25519PrivateKey
) -> None:
    """The kept connection is never pre-pinged; once it is gone (the database itself healthy),
    the next append is written on a new connection instead of being refused with a 503."""
    log = await AuditLog.open(store_url, log_key, ORIGIN)
    try:
        await asyncio.sleep(0.002)
        await log.append(make_record(0))
        _close_under_it(log.store)
        await asyncio.sleep(0.002)
        assert (await log.append(make_record(1))).leaf_index == 1
        assert (await log.publish()).size == 2
    finally:
        await log.close()
    assert verify_log(LogStore.open(store_url))[0].records == 2


async def test_a_connection_lost_at_commit_is_not_written_twice(
    tmp_path: Path, log_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the commit lands, then the connection is lost before it is acknowledged.
    That append is reported failed and never written again (no duplicate leaf)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = await AuditLog.open(url, log_key, ORIGIN)
    lost: list[bool] = []

    def commit_then_lose(self: Any) -> None:
        self.driver_connection.commit()
        if self is log.store._appenders.get(False) and not lost:
            lost.append(True)
            self.driver_connection.close()
            self.driver_connection.commit()  # raises: Cannot operate on a closed database

    try:
        await log.append(make_record(0))
        monkeypatch.setattr(_ConnectionFairy, "commit", commit_then_lose, raising=False)
        with pytest.raises(AuditUnavailable):
            await log.append(make_record(1))
        assert log.store.count_records(log.log_id) == 2
        assert (await log.append(make_record(2))).leaf_index == 2
        assert (await log.publish()).size == 3
    finally:
        monkeypatch.undo()
        await log.close()
    assert verify_log(LogStore.open(url))[0].records == 3


async def test_read_only_open_reads_a_log_on_read_only_storage(
    tmp_path: Path, log_key: Ed25519PrivateKey
) -> None:
    """A cleanly closed log (no -wal file left) on a read-only medium, as handed to an auditor:
    ``mode=ro`` alone would have to create the WAL index there and fails to open it."""
    unshare = shutil.which("unshare")
    need(unshare is not None, "unshare (util-linux) is not available")
    assert unshare is not None
    folder = tmp_path / "evidence"
    url = f"sqlite:///{folder / 'audit.db'}"
    log = await AuditLog.open(url, log_key, ORIGIN)
    for i in range(3):
        await log.append(make_record(i))
    await log.close()
    assert sorted(p.name for p in folder.iterdir()) == ["audit.db"]
    probe = ("import sys; from audit import LogStore, verify_log; "
             "print(verify_log(LogStore.open(sys.argv[1], read_only=True))[0].records)")
    # A private mount namespace: the folder is read-only for the child only, and only while
    # it runs.
    script = 'mount --bind -o ro "$1" "$1" || exit 77; shift; exec "$@"'
    child = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
         str(folder), sys.executable, "-c", probe, url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    need(child.returncode != 77 and "unshare:" not in child.stderr,
         "no private mount namespace here (unshare --user --map-root-user --mount)")
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "3"
    assert sorted(p.name for p in folder.iterdir()) == ["audit.db"]


async def test_the_sqlite_wal_stays_bounded_under_steady_appends(
    tmp_path: Path, log_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passive checkpoint beside a steady stream of commits never copies the last frame, so
    SQLite never started the WAL afresh: it grew by megabytes a second until the disk was full
    (and then stayed full). Past its limit the WAL is now checkpointed with no commit beside
    it, and the next commit starts it from its beginning. (Limits made small to see it soon.)"""
    import audit._store as store_module
    import audit._writer as writer_module

    monkeypatch.setattr(store_module, "_WAL_SIZE_LIMIT", 1 << 20)
    monkeypatch.setattr(writer_module, "WAL_RESET_BYTES", 1 << 20)
    path = tmp_path / "audit.db"
    log = await AuditLog.open(f"sqlite:///{path}?synchronous=normal", log_key, ORIGIN)
    wal, sizes, written = Path(f"{path}-wal"), [0], 0
    try:
        loop = asyncio.get_running_loop()
        ends = loop.time() + 6.0
        while loop.time() < ends:
            await asyncio.gather(*(log.append(make_record(written + i)) for i in range(64)))
            written += 64
            sizes.append(wal.stat().st_size if wal.exists() else 0)
    finally:
        await log.close()
    # The WAL started afresh again and again (its file cut back to the limit each time); one
    # that never does only grows. What it holds between two is what a publication period
    # writes (megabytes on a fast disk), not everything since the start.
    restarts = sum(1 for before, after in itertools.pairwise(sizes) if after < before)
    assert restarts >= 3, (restarts, max(sizes))
    assert max(sizes) < 48 << 20, max(sizes)
    assert verify_log(LogStore.open(f"sqlite:///{path}"))[0].records == written
