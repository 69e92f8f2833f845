"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temp dir, unix socket only.

Use the session fixture from a conftest: ``from tests.pg import postgresql  # noqa: F401``; it
yields a ``PgCluster`` whose ``new_database()`` returns a fresh ``postgresql+psycopg://`` URL.
initdb refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need

__all__ = ["PgCluster", "find_bindir", "postgresql"]


def find_bindir() -> Path | None:
    initdb = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One running cluster; stop() removes it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="sealgate-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        os.chmod(self.root, 0o755)

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> PgCluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                  "-U", self.user, "--no-sync", "-E", "UTF8")  # fmt: skip
        opts = (f"-k {self.root} -c listen_addresses='' -p {self.port} -c fsync=off "
                "-c max_connections=300")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
                  "-l", str(self.root / "log"), "-w", "start")  # fmt: skip
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.root}&port={self.port}"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        conninfo = f"host={self.root} port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PgCluster]:
    """A running PostgreSQL cluster for the whole session (skips, or fails in CI, if absent)."""
    bindir = find_bindir()
    need(bindir is not None, "PostgreSQL server binaries (initdb) not installed")
    assert bindir is not None
    cluster = PgCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()
