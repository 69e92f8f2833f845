"""The audit store's migrations: one locked transaction, and a newer release's schema refused
by name."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.operations import Operations

from audit import LogStore
from audit._errors import DatabaseTooNew
from tests.conftest import ROOT

_OPEN = "import sys; from audit import LogStore; LogStore.open(sys.argv[1]).close(); print('ok')"


def test_first_starts_at_once_all_open_the_same_new_file(tmp_path: Path) -> None:
    """Three processes opening a new SQLite file together: one migrates, the others wait for
    its lock and find the work done (without the lock two created the tables, and one failed
    with "table already exists")."""
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'audit-{attempt}.db'}"
        starts = [subprocess.Popen([sys.executable, "-c", _OPEN, url], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(3)]
        for start in starts:
            out, err = start.communicate(timeout=120)
            assert start.returncode == 0 and out == "ok\n", err


def test_a_migration_cut_short_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure part-way (here the first index) undoes the tables made before it: the next
    start migrates the file from nothing, where it used to find tables without a revision and
    fail on every start."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    create_index = Operations.create_index

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cut short")  # a fault: the process dying here

    monkeypatch.setattr(Operations, "create_index", fail)
    with pytest.raises(RuntimeError, match="cut short"):
        LogStore.open(url)
    with sqlite3.connect(tmp_path / "audit.db") as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
    monkeypatch.setattr(Operations, "create_index", create_index)
    LogStore.open(url).close()


def test_a_newer_releases_database_is_refused_by_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    LogStore.open(url).close()
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("UPDATE audit_alembic_version SET version_num = '0099_future'")
    with pytest.raises(DatabaseTooNew) as info:
        LogStore.open(url)
    assert str(info.value).startswith("database_too_new: the audit database is at schema "
                                      "revision '0099_future'")
