"""The state database (tenants, keys, accounts) itself, on real SQLite files in tmp_path (and
one PostgreSQL): older and newer schemas, concurrent first opens and creates, errors without
SQL, the file's mode."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from proxy.cli import main
from proxy.errors import InvalidRequest, SealgateError
from proxy.tenants import StateUnavailable, TenantStore
from proxy.users import UserError, UserStore
from tests.conftest import ROOT
from tests.pg import PgCluster, postgresql  # noqa: F401  (session fixture)

PASSWORD = "correct horse battery"
S = TypeVar("S")


def _url(tmp_path: Path, query: str = "") -> str:
    return f"sqlite:///{tmp_path / 'sealgate.db'}{query}"


@contextlib.contextmanager
def _sqlite(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The file as another program sees it; committed on leaving."""
    db = sqlite3.connect(tmp_path / "sealgate.db")
    try:
        with db:
            yield db
    finally:
        db.close()


@contextlib.contextmanager
def _write_locked(tmp_path: Path) -> Iterator[None]:
    """Another writer holding the database's write lock (a long admin transaction, a backup)."""
    db = sqlite3.connect(tmp_path / "sealgate.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


def _upgrade(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "proxy" / "tenants" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, revision)


def _versions(tmp_path: Path, table: str) -> list[str]:
    with _sqlite(tmp_path) as db:
        return [r[0] for r in db.execute(f"SELECT version_num FROM {table}")]


# -- schema versions ---------------------------------------------------------------------------
@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_a_database_from_before_the_version_table_rename_opens(tmp_path: Path,
                                                               revision: str) -> None:
    """Releases before 2061b1f versioned the database in alembic's default table: its revision
    is carried across, and only the later migrations run, on the rows already there."""
    url = _url(tmp_path)
    _upgrade(url, revision)
    with _sqlite(tmp_path) as db:
        db.execute("ALTER TABLE sealgate_state_version RENAME TO alembic_version")
        db.execute("INSERT INTO tenants VALUES ('ten_1', 'acme', 'tp_1', '2024-01-01 00:00:00')")
    store = TenantStore(url)
    assert [(t.id, t.name) for t in store.tenants()] == [("ten_1", "acme")]
    store.close()
    users = UserStore(url)
    assert users.create("alice", "admin", PASSWORD).session_generation == 0
    users.close()
    assert _versions(tmp_path, "sealgate_state_version") == ["0003"]
    assert _versions(tmp_path, "alembic_version") == [revision]  # left for that release


def test_a_postgresql_database_from_before_the_rename_opens(
        postgresql: PgCluster) -> None:  # noqa: F811
    """The same on PostgreSQL, where the migration takes an advisory lock in the transaction
    that carries the revision across and migrates."""
    url = postgresql.new_database()
    _upgrade(url, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as db:
        db.exec_driver_sql("ALTER TABLE sealgate_state_version RENAME TO alembic_version")
        db.exec_driver_sql("ALTER TABLE alembic_version RENAME CONSTRAINT "
                           "sealgate_state_version_pkc TO alembic_version_pkc")
        db.exec_driver_sql("INSERT INTO tenants VALUES ('ten_1', 'acme', 'tp_1', '2024-01-01')")
    store = TenantStore(url)
    assert [t.name for t in store.tenants()] == ["acme"]
    store.close()
    with engine.begin() as db:
        assert db.exec_driver_sql("SELECT version_num FROM sealgate_state_version").all() == [("0003",)]
        db.exec_driver_sql("UPDATE sealgate_state_version SET version_num = '0004'")
    engine.dispose()
    with pytest.raises(StateUnavailable) as error:
        UserStore(url)
    assert error.value.code == "database_too_new"


def test_a_newer_release_database_is_refused_by_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    TenantStore(_url(tmp_path)).close()
    with _sqlite(tmp_path) as db:
        db.execute("UPDATE sealgate_state_version SET version_num = '0004'")
    for opening in (TenantStore, UserStore):
        with pytest.raises(StateUnavailable) as error:
            opening(_url(tmp_path))
        assert error.value.code == "database_too_new" and "'0004'" in str(error.value)
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path))
    for argv in (["tenants", "list"], ["users", "list"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("sealgate: database_too_new: the state database is at schema "
                              "revision '0004'") and err.count("\n") == 1
    assert _versions(tmp_path, "sealgate_state_version") == ["0004"]  # nothing was migrated


def test_an_unknown_revision_in_the_old_version_table_is_refused(tmp_path: Path) -> None:
    _upgrade(_url(tmp_path), "0002")
    with _sqlite(tmp_path) as db:
        db.execute("ALTER TABLE sealgate_state_version RENAME TO alembic_version")
        db.execute("UPDATE alembic_version SET version_num = 'ffee'")
    with pytest.raises(StateUnavailable) as error:
        TenantStore(_url(tmp_path))
    assert error.value.code == "database_too_new" and "'ffee'" in str(error.value)


# -- errors ------------------------------------------------------------------------------------
def test_a_locked_database_is_a_state_error_without_sql(tmp_path: Path) -> None:
    """The driver's error names the statement and its parameters (key and scrypt hashes): the
    caller sees the operation and the reason; the cause keeps the SQL but not the values."""
    url = _url(tmp_path, "?timeout=0.05")
    tenants, users = TenantStore(url), UserStore(url)
    tenants.create_tenant("acme")
    with _write_locked(tmp_path):
        reader = TenantStore(url)  # opening a database at the newest schema only reads it
        assert [t.name for t in reader.tenants()] == ["acme"]
        reader.close()
        with pytest.raises(StateUnavailable) as key_error:
            tenants.create_key("acme")
        with pytest.raises(StateUnavailable) as user_error:
            users.create("alice", "admin", PASSWORD)
    assert str(key_error.value) == ("state_unavailable: could not create an API key: "
                                    "the state database failed (database is locked)")
    assert str(user_error.value) == ("state_unavailable: could not create an account: "
                                     "the state database failed (database is locked)")
    assert isinstance(key_error.value, SealgateError) and key_error.value.status == 503
    for error in (key_error.value, user_error.value):
        assert "parameters hidden" in str(error.__cause__)
    assert "scrypt$" not in str(user_error.value.__cause__)
    tenants.close()
    users.close()


class _Lines:
    """Standard input holding ``text``."""

    def __init__(self, text: str) -> None:
        self._lines = iter(text.splitlines(keepends=True))

    def readline(self) -> str:
        return next(self._lines, "")


def test_cli_on_a_locked_database_prints_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEALGATE_DATABASE_URL", _url(tmp_path, "?timeout=0.05"))
    assert main(["tenants", "create", "acme"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", _Lines(PASSWORD + "\n"))
    with _write_locked(tmp_path):
        assert main(["keys", "create", "--tenant", "acme"]) == 1
        assert main(["users", "create", "alice", "--role", "admin", "--password-stdin"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("sealgate: state_unavailable: could not create an API key: the state database "
                   "failed (database is locked)\n"
                   "sealgate: state_unavailable: could not create an account: the state database "
                   "failed (database is locked)\n")


def test_request_path_lookup_failure_hides_the_key_hash(tmp_path: Path) -> None:
    store = TenantStore(_url(tmp_path), cache_ttl_s=0)
    store.create_tenant("acme")
    _, key = store.create_key("acme")
    with _sqlite(tmp_path) as db:
        db.execute("ALTER TABLE api_keys RENAME TO api_keys_gone")
    with pytest.raises(StateUnavailable) as error:
        store.authenticate("Bearer " + key)
    assert str(error.value) == ("state_unavailable: could not check an API key: the state "
                                "database failed (no such table: api_keys)")
    assert hashlib.sha256(key.encode()).hexdigest() not in str(error.value.__cause__)
    store.close()


# -- names -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["acme\n", "acme\r\n", "\nacme", "ac\nme"])
def test_names_with_a_newline_are_refused(tmp_path: Path, name: str) -> None:
    tenants, users = TenantStore(_url(tmp_path)), UserStore(_url(tmp_path))
    with pytest.raises(InvalidRequest):
        tenants.create_tenant(name)
    with pytest.raises(UserError) as error:
        users.create(name.replace("acme", "alice"), "admin", PASSWORD)
    assert error.value.code == "invalid_name"
    assert tenants.tenants() == [] and users.users() == []
    tenants.close()
    users.close()


# -- concurrency -------------------------------------------------------------------------------
_OPEN = """
import pathlib, sys, time
from proxy.tenants import TenantStore
url, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
TenantStore(url).close()
"""


def test_first_opens_in_several_processes_migrate_once(tmp_path: Path) -> None:
    """Processes opening a new database together (CLI commands, replicas starting) migrate one
    at a time; the later ones find the schema in place."""
    url, go = _url(tmp_path), tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, url, str(tmp_path / f"ready{i}"),
                               str(go)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), errors
    assert _versions(tmp_path, "sealgate_state_version") == ["0003"]


def _together(stores: list[S], work: Callable[[S], str]) -> list[str]:
    """``work(store)`` for each store, in threads released at once; what each returned."""
    barrier, lock = threading.Barrier(len(stores)), threading.Lock()
    results: list[str] = []

    def run(store: S) -> None:
        barrier.wait()
        result = work(store)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_creates_of_one_tenant(tmp_path: Path) -> None:
    """--exist-ok callers racing all get the one tenant; without it, all but one are told it
    exists (each lost the race between its select and its insert: the conflict is re-read)."""
    stores = [TenantStore(_url(tmp_path)) for _ in range(8)]
    assert all(store.tenants() == [] for store in stores)  # connected: the race is the create

    def create(store: TenantStore, name: str, exist_ok: bool) -> str:
        try:
            return store.create_tenant(name, exist_ok=exist_ok).id
        except SealgateError as exc:
            return exc.code

    shared = _together(stores, lambda store: create(store, "acme", True))
    assert len(shared) == len(stores) and len(set(shared)) == 1 and shared[0].startswith("ten_")
    once = _together(stores, lambda store: create(store, "globex", False))
    assert once.count("tenant_exists") == len(stores) - 1
    for store in stores:
        store.close()


def test_concurrent_creates_of_one_account(tmp_path: Path) -> None:
    stores = [UserStore(_url(tmp_path)) for _ in range(4)]
    assert all(store.users() == [] for store in stores)

    def create(store: UserStore) -> str:
        try:
            return store.create("alice", "admin", PASSWORD).username
        except UserError as exc:
            return exc.code

    assert sorted(_together(stores, create)) == ["alice"] + ["user_exists"] * (len(stores) - 1)
    for store in stores:
        store.close()


# -- the file ----------------------------------------------------------------------------------
def test_a_new_database_file_is_owner_only(tmp_path: Path) -> None:
    """It holds scrypt and API-key hashes; SQLite gives its journal the same mode."""
    old = os.umask(0o022)
    try:
        store = TenantStore(_url(tmp_path / "data"))
        store.create_tenant("acme")
        with _sqlite(tmp_path / "data") as db:
            db.execute("INSERT INTO tenants VALUES ('ten_2', 'other', 'tp_2', '2024-01-01')")
            journal = tmp_path / "data" / "sealgate.db-journal"
            assert journal.stat().st_mode & 0o777 == 0o600
        store.close()
    finally:
        os.umask(old)
    assert (tmp_path / "data" / "sealgate.db").stat().st_mode & 0o777 == 0o600


def test_a_reviewer_for_a_tenant_needs_the_state_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``users create --tenant`` in a mistyped data directory says there is no state database;
    it used to create an empty one before refusing the tenant, after which every listing there
    printed nothing instead of saying so."""
    data = tmp_path / "typo"
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(data))
    monkeypatch.delenv("SEALGATE_DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "stdin", _Lines(PASSWORD + "\n"))
    assert main(["users", "create", "bob", "--role", "reviewer", "--tenant", "acme",
                 "--password-stdin"]) == 1
    assert capsys.readouterr().err == f"sealgate: no state database at {data / 'sealgate.db'} " \
                                      "(check SEALGATE_DATA_DIR or the config's data_dir)\n"
    assert not (data / "sealgate.db").exists()
    assert main(["tenants", "list"]) == 1
    assert "no state database" in capsys.readouterr().err


def test_a_password_that_is_not_utf8_is_one_coded_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALGATE_")}
    env["SEALGATE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "users", "create", "fay", "--role",
                           "admin", "--password-stdin"], input=b"\xff\xfe correct horse\n", env=env,
                          capture_output=True, check=False)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr == b"sealgate: invalid_password: the password is not valid UTF-8 text\n"


def test_asking_for_a_password_without_a_terminal_names_password_stdin(tmp_path: Path) -> None:
    """getpass warned that the password may be echoed, then failed on the ended pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALGATE_")}
    env["SEALGATE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "users", "create", "fay", "--role",
                           "admin"], stdin=subprocess.DEVNULL, env=env, capture_output=True,
                          check=False)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr == (b"sealgate: no_terminal: no terminal to ask for the password on; "
                           b"pipe it with --password-stdin\n")
