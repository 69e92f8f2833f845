"""The log store: SQLAlchemy Core over the sqlmodel tables, SQLite by default, PostgreSQL by URL.

SQLite runs in WAL mode. With ``synchronous=FULL`` (the default, or ``?synchronous=full`` in the
URL) each commit is fsynced, so an append that returned is durable across power loss; group
commit amortises that fsync over a whole batch. ``?synchronous=normal`` keeps every returned
append durable across a crash of the process (``kill -9``) but not of the machine, and takes the
fsync off the request path (SQLite WAL semantics; docs/operations.md).
All methods are synchronous; ``AuditLog`` calls them from its writer thread or a worker thread.
SQLAlchemy errors are translated to ``AuditUnavailable`` here and never escape the package.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection

from ._errors import AuditBusy, AuditError, AuditUnavailable, CorruptStore
from ._tables import VERSION_TABLE, CheckpointRow, LogRow, NodeRow, RecordRow

__all__ = ["LogStore", "normalize_url"]

LOGS = LogRow.__table__  # type: ignore[attr-defined]
RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
NODES = NodeRow.__table__  # type: ignore[attr-defined]
CHECKPOINTS = CheckpointRow.__table__  # type: ignore[attr-defined]
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x5EA16A7E  # advisory lock: replicas sharing a database migrate one at a time


def normalize_url(url: str) -> str:
    """Map accepted URL spellings to the synchronous drivers this store uses."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise AuditUnavailable("the audit store needs a database file, not memory")
        return str(parsed.set(drivername="sqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise AuditUnavailable(f"unsupported audit database backend {backend!r}")


def _int(value: Any, where: str) -> int:
    """A stored integer, strictly (``int("7")`` would pass a text value through)."""
    if type(value) is not int:
        raise CorruptStore(f"{where} holds a {type(value).__name__}, not an integer")
    return value


def _bytes(value: Any, where: str) -> bytes:
    """A stored binary value, strictly (``bytes(7)`` would be seven zero bytes)."""
    if not isinstance(value, (bytes, memoryview)):
        raise CorruptStore(f"{where} holds a {type(value).__name__}, not binary")
    return bytes(value)


def _str(value: Any, where: str) -> str:
    if type(value) is not str:
        raise CorruptStore(f"{where} holds a {type(value).__name__}, not text")
    return value


@contextlib.contextmanager
def _translated(what: str, driver_errors: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    try:
        yield
    except AuditError:
        raise
    except Exception as exc:
        if isinstance(exc, (SQLAlchemyError, OSError, *driver_errors)):
            raise AuditUnavailable(f"audit store failed to {what} ({type(exc).__name__})") from exc
        raise


_SYNC_MODES = {"full": "FULL", "normal": "NORMAL"}
_WAL_SIZE_LIMIT = 64 << 20  # bytes the WAL file is truncated back to after a checkpoint


def _sqlite_pragmas(synchronous: str) -> Any:
    def apply(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        # No automatic WAL checkpoints: whichever commit crossed the threshold would copy the
        # WAL into the database and fsync on a request's path. The log writer checkpoints
        # after each publication instead (``checkpoint_wal``), off that path.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        cursor.close()

    return apply


def _sync_mode(url: str) -> tuple[str, str]:
    """Split the ``synchronous`` query parameter (SQLite only) off the URL."""
    parsed = make_url(url)
    mode = str(parsed.query.get("synchronous", "full")).lower()
    if mode not in _SYNC_MODES:
        raise AuditUnavailable("synchronous must be 'full' or 'normal'")
    return parsed.difference_update_query(["synchronous"]).render_as_string(
        hide_password=False), _SYNC_MODES[mode]


def _read_only_uri(path: str) -> str:
    """``mode=ro``, or also ``immutable`` for a WAL database with no -wal file (no writer has it
    open) in a folder or on a medium this process cannot write: a read-only connection would
    have to create the WAL index there and fails (sqlite.org/wal.html, read-only databases)."""
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(f"{path}-wal") and not os.access(folder, os.W_OK):
        uri += "&immutable=1"
    return uri


def _is_busy(exc: BaseException) -> bool:
    """SQLite refused a lock another connection holds (SQLITE_BUSY, with no wait)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY)


class LogStore:
    """Persistence of records, Merkle nodes and checkpoints for one or more logs."""

    def __init__(self, engine: Engine, *, synchronous: str = "FULL") -> None:
        self.engine = engine
        self.synchronous = synchronous
        # Appends go through connections kept open for them: the writer's, which waits up to
        # the busy timeout for a lock another process holds, and the inline one (the event
        # loop's thread), which never waits (``AuditBusy``: hand the record to the writer).
        self._appenders: dict[bool, PoolProxiedConnection] = {}
        self._file: tuple[str, int, int] | None = None  # SQLite: (path, device, inode) opened
        # Errors of the driver itself (appends and tree growth call it directly).
        self._driver_errors: tuple[type[Exception], ...] = (engine.dialect.loaded_dbapi.Error,)
        # Driver SQL for the write hot path, built once (qmark for SQLite, format for psycopg).
        self._mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_record = self._insert_sql(RECORDS)
        self._record_columns = tuple(c.name for c in RECORDS.columns)
        self._insert_node = self._insert_sql(NODES)  # columns: log_id, node_id, hash
        self._set_size = (f"UPDATE {LOGS.name} SET integrated_size = {self._mark} "  # noqa: S608
                          f"WHERE log_id = {self._mark}")

    @classmethod
    def open(cls, url: str, *, read_only: bool = False) -> LogStore:
        """Connect and run the migrations to ``head``.

        ``read_only`` (verification, inspection) changes nothing: no migration, no switch to
        WAL, a SQLite file opened ``mode=ro``; a database not at this release's schema is
        refused instead of upgraded."""
        with _translated("open"):
            url, synchronous = _sync_mode(url)
            sync_url = normalize_url(url)
            parsed = make_url(sync_url)
            if read_only:
                return cls._open_read_only(sync_url, parsed)
            if parsed.get_backend_name() == "sqlite" and parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(sync_url, pool_pre_ping=parsed.get_backend_name() != "sqlite")
            if parsed.get_backend_name() == "sqlite":
                event.listen(engine, "connect", _sqlite_pragmas(synchronous))
            store = cls(engine, synchronous=synchronous)
            store._migrate()
            store.remember_file()
            return store

    @classmethod
    def _open_read_only(cls, sync_url: str, parsed: Any) -> LogStore:
        if parsed.get_backend_name() == "sqlite":
            uri = _read_only_uri(str(parsed.database))
            engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))
        else:
            engine = create_engine(sync_url, pool_pre_ping=True,
                                   execution_options={"postgresql_readonly": True})
        store = cls(engine)
        head = ScriptDirectory(str(_MIGRATIONS)).get_current_head()
        with engine.connect() as conn:
            current = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
        if current != head:
            engine.dispose()
            raise AuditUnavailable(
                "not a Sealgate audit database" if current is None else
                f"the audit database is at schema {current}, this release reads {head}")
        return store

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def commits_are_local(self) -> bool:
        """A commit is in-process work with no fsync and no network round trip (SQLite with
        ``synchronous=normal``): cheaper to run where the record was signed than to hand over."""
        return self.is_sqlite and self.synchronous == "NORMAL"

    def _migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        # One transaction holding the migration lock: an advisory lock on PostgreSQL, the write
        # lock on SQLite (BEGIN IMMEDIATE; without it the driver runs DDL outside any
        # transaction, so two first starts both created the tables, and a crash part-way left
        # tables without a revision that no start could get past).
        with self.engine.begin() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        for conn in self._appenders.values():
            conn.close()
        self._appenders.clear()
        self.engine.dispose()

    def reset_connections(self) -> None:
        """After a failure, open every connection afresh: one SQLite opened while its file could
        not be written stays read-only for good, and the pool would keep handing it out."""
        for conn in self._appenders.values():
            conn.invalidate()
        self._appenders.clear()
        self.engine.dispose()

    def remember_file(self) -> None:
        """Note which file the SQLite store opened (see ``check_file``); connections opened
        from now on never create one (``mode=rw``): a new empty database in place of a removed
        one would start the log over under the same key."""
        if not self.is_sqlite:
            return
        path = os.path.abspath(str(self.engine.url.database))
        st = os.stat(path)
        self._file = (path, st.st_dev, st.st_ino)
        existing = f"file:{urllib.parse.quote(path)}?mode=rw"

        def connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
            cargs[:1] = [existing]
            cparams["uri"] = True

        event.listen(self.engine, "do_connect", connect)

    def check_file(self) -> None:
        """``AuditUnavailable`` when the SQLite file opened has been removed or replaced: its
        open connections would go on writing records into a file nobody can read again."""
        if self._file is None:
            return
        path, device, inode = self._file
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (device, inode):
            raise AuditUnavailable("the audit database file was removed or replaced")

    def checkpoint_wal(self) -> None:
        """Copy committed WAL frames into the SQLite database file without waiting for readers
        or writers (a passive checkpoint); a no-op on PostgreSQL. On a connection of its own,
        closed after: one opened while the file could not be written (a full or read-only disk,
        when publication fails too) stays read-only, and must not go back to the pool."""
        if not self.is_sqlite:
            return
        with _translated("checkpoint the WAL", self._driver_errors):
            conn = self.engine.raw_connection()
            try:
                cursor = conn.cursor()
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                cursor.close()
            finally:
                conn.invalidate()

    def wal_bytes(self) -> int:
        """The size of the SQLite WAL file (0 on PostgreSQL, or when there is none)."""
        if self._file is None:
            return 0
        try:
            return os.stat(self._file[0] + "-wal").st_size
        except OSError:
            return 0

    def _begin(self) -> contextlib.AbstractContextManager[Connection]:
        return self.engine.begin()

    # -- logs ------------------------------------------------------------------------------
    def register_log(self, log_id: str, origin: str, vkey: str) -> int:
        """Create the log row if absent; returns its integrated size."""
        with _translated("register the log"), self._begin() as conn:
            row = conn.execute(select(LOGS).where(LOGS.c.log_id == log_id)).first()
            if row is None:
                values = {"log_id": log_id, "origin": origin, "vkey": vkey, "integrated_size": 0}
                conn.execute(insert(LOGS).values(**values))
                return 0
            if row.vkey != vkey:
                raise AuditUnavailable("stored log identity does not match the signing key")
            return _int(row.integrated_size, "audit_logs.integrated_size")

    def logs(self) -> list[tuple[str, str, str, int]]:
        """(log_id, origin, vkey, integrated_size) for every log in the store."""
        with _translated("list logs"), self.engine.connect() as conn:
            rows = conn.execute(select(LOGS).order_by(LOGS.c.log_id)).all()
        return [(_str(r.log_id, "audit_logs.log_id"), _str(r.origin, "audit_logs.origin"),
                 _str(r.vkey, "audit_logs.vkey"),
                 _int(r.integrated_size, "audit_logs.integrated_size")) for r in rows]

    # -- records ---------------------------------------------------------------------------
    def next_index(self, log_id: str) -> int:
        with _translated("read the log size"), self.engine.connect() as conn:
            top = conn.execute(
                select(func.max(RECORDS.c.leaf_index)).where(RECORDS.c.log_id == log_id)
            ).scalar()
        return 0 if top is None else _int(top, "audit_records.leaf_index") + 1

    def _insert_sql(self, table: Any) -> str:
        cols = [c.name for c in table.columns]
        marks = ", ".join([self._mark] * len(cols))
        return f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({marks})"  # noqa: S608

    def _grow_tree(self, cursor: Any, log_id: str, nodes: Sequence[tuple[int, bytes]],
                   size: int) -> None:
        """Store new complete nodes and the integrated size (inside the caller's transaction,
        through its driver cursor)."""
        if nodes:
            cursor.executemany(self._insert_node, [(log_id, n, h) for n, h in nodes])
        cursor.execute(self._set_size, (size, log_id))

    def insert_records(self, rows: Sequence[dict[str, Any]], *, nodes: Sequence[tuple[int, bytes]] = (),
                       size: int | None = None, inline: bool = False) -> None:
        """Insert a batch of records in one transaction (group commit), with the tree nodes they
        complete and the new integrated size when given (all rows of one log).

        The write hot path talks to the driver directly (prebuilt SQL, one cursor, the driver's
        own transaction and commit): SQLAlchemy's per-statement and per-transaction layers cost
        more than the SQLite work itself. Appends go through one connection kept open for them;
        the log writer serializes its calls. After a failure that connection is discarded.
        ``inline`` (SQLite): never wait for a lock another process holds; ``AuditBusy`` then,
        with nothing written."""
        with _translated("write records", self._driver_errors):
            self._insert_batch(rows, nodes, size, inline, retry=inline in self._appenders)

    def _appender(self, inline: bool) -> PoolProxiedConnection:
        conn = self._appenders.get(inline)
        if conn is None:
            conn = self.engine.raw_connection()
            if inline and self.is_sqlite:
                cursor = conn.cursor()
                cursor.execute("PRAGMA busy_timeout=0")
                cursor.close()
            self._appenders[inline] = conn
        return conn

    def _insert_batch(self, rows: Sequence[dict[str, Any]], nodes: Sequence[tuple[int, bytes]],
                      size: int | None, inline: bool, *, retry: bool) -> None:
        """One attempt on the kept connection. That connection is never pre-pinged: if it was
        closed under it while idle (a server restart, failover or idle timeout) and fails before
        the commit was sent, its transaction died uncommitted and ``retry`` writes the batch
        once more on a new connection; a failed commit may have landed and is never retried."""
        conn = self._appender(inline)
        committing = False
        try:
            cursor = conn.cursor()
            try:
                cols = self._record_columns
                cursor.executemany(self._insert_record, [tuple(r[c] for c in cols) for r in rows])
                if size is not None:
                    self._grow_tree(cursor, rows[0]["log_id"], nodes, size)
            finally:
                cursor.close()
            committing = True
            conn.commit()
            return
        except BaseException as exc:
            stale = retry and not committing and self._is_disconnect(exc, conn)
            self._appenders.pop(inline, None)
            conn.invalidate()  # closes the driver connection, rolling back what it held
            if inline and not committing and _is_busy(exc):
                raise AuditBusy("the audit database is locked by another process") from exc
            if not stale:
                raise
        self._insert_batch(rows, nodes, size, inline, retry=False)

    def _is_disconnect(self, exc: BaseException, conn: PoolProxiedConnection) -> bool:
        return isinstance(exc, self._driver_errors) and self.engine.dialect.is_disconnect(
            exc, conn.dbapi_connection, None)  # type: ignore[arg-type]

    def record_rows(self, log_id: str, start: int, limit: int) -> list[Any]:
        """Full record rows (envelope and metadata) for indices >= start, in order."""
        query = (
            select(RECORDS)
            .where(RECORDS.c.log_id == log_id, RECORDS.c.leaf_index >= start)
            .order_by(RECORDS.c.leaf_index)
            .limit(limit)
        )
        with _translated("read records"), self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def get_record(self, record_id: str) -> Any | None:
        with _translated("read a record"), self.engine.connect() as conn:
            return conn.execute(select(RECORDS).where(RECORDS.c.record_id == record_id)).first()

    def records_for_request(self, tenant: str | None, request_id: str) -> list[Any]:
        """The records (intent, completion or denial) of one request, in log order; of any
        tenant when ``tenant`` is None (the operator's CLI; without the tenant the lookup reads
        every record)."""
        where = [RECORDS.c.request_id == request_id]
        if tenant is not None:
            where.append(RECORDS.c.tenant == tenant)
        query = select(RECORDS).where(*where).order_by(RECORDS.c.time_us).limit(8)
        with _translated("read a request's records"), self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def count_records(self, log_id: str, below: int | None = None) -> int:
        """The log's stored records (those at a leaf index below ``below`` when given)."""
        with _translated("count records"), self.engine.connect() as conn:
            query = select(func.count()).select_from(RECORDS).where(RECORDS.c.log_id == log_id)
            if below is not None:
                query = query.where(RECORDS.c.leaf_index < below)
            return int(conn.execute(query).scalar_one())

    def repeated_record(self, log_id: str, start: int = 0,
                        stop: int | None = None) -> tuple[str, str] | None:
        """(request_id, kind) of a request with two records of one kind in the log, one of them
        at a leaf index in ``[start, stop)``, if any."""
        a, b = RECORDS.alias("a"), RECORDS.alias("b")
        query = (select(a.c.request_id, a.c.kind)
                 .where(a.c.log_id == log_id, a.c.leaf_index >= start,
                        b.c.log_id == log_id, b.c.tenant == a.c.tenant,
                        b.c.request_id == a.c.request_id, b.c.kind == a.c.kind,
                        b.c.leaf_index != a.c.leaf_index)
                 .limit(1))
        if stop is not None:
            query = query.where(a.c.leaf_index < stop)
        with _translated("look for repeated records"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (str(row.request_id), str(row.kind))

    def unregistered_rows(self) -> int:
        """Records, nodes and checkpoints whose log is not in ``audit_logs``."""
        known = select(LOGS.c.log_id)
        with _translated("look for rows of no log"), self.engine.connect() as conn:
            return sum(int(conn.execute(select(func.count()).select_from(table)
                                        .where(table.c.log_id.not_in(known))).scalar_one())
                       for table in (RECORDS, NODES, CHECKPOINTS))

    # -- Merkle nodes and checkpoints --------------------------------------------------------
    def integrate(
        self,
        log_id: str,
        nodes: Sequence[tuple[int, bytes]],
        size: int,
        checkpoint: tuple[bytes, str, int] | None,
    ) -> None:
        """Persist new complete nodes, the integrated size and a checkpoint in one transaction."""
        with _translated("integrate leaves", self._driver_errors), self._begin() as conn:
            cursor = conn.connection.cursor()
            try:
                self._grow_tree(cursor, log_id, nodes, size)
            finally:
                cursor.close()
            if checkpoint is not None:
                root, note, time_us = checkpoint
                values = {"log_id": log_id, "size": size, "root_hash": root, "note": note}
                conn.execute(insert(CHECKPOINTS).values(time_us=time_us, **values))

    def get_nodes(self, log_id: str, node_ids: Sequence[int]) -> dict[int, bytes]:
        if not node_ids:
            return {}
        # The proof hot path: plain driver SQL, one round trip (node ids are integers we made).
        mark = self._mark
        sql = (
            f"SELECT node_id, hash FROM audit_nodes WHERE log_id = {mark} "  # noqa: S608
            f"AND node_id IN ({', '.join([mark] * len(node_ids))})"
        )
        with _translated("read tree nodes"), self.engine.connect() as conn:
            rows = conn.exec_driver_sql(sql, (log_id, *node_ids)).all()
        return {_int(n, "audit_nodes.node_id"): _bytes(h, "audit_nodes.hash") for n, h in rows}

    def bulk_nodes(self, log_id: str, nodes: Sequence[tuple[int, bytes]], size: int) -> None:
        """Load precomputed nodes for a fresh log (benchmarks, tests). A log writer continues
        such a tree only under a checkpoint its key signed over it (see ``integrate``)."""
        self.integrate(log_id, nodes, size, None)

    def latest_checkpoint(self, log_id: str) -> tuple[int, bytes, str] | None:
        found = self.checkpoints(log_id, limit=1, newest_first=True)
        return found[0] if found else None

    def checkpoints(self, log_id: str, *, after: int | None = None, through: int | None = None,
                    limit: int | None = None, newest_first: bool = False
                    ) -> list[tuple[int, bytes, str]]:
        """(size, root, note) of the log's checkpoints by size: all of them, or those above
        ``after`` and up to ``through``, at most ``limit`` (the smallest, or with
        ``newest_first`` the largest); with a limit, one index seek."""
        size = CHECKPOINTS.c.size
        query = select(size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note).where(
            CHECKPOINTS.c.log_id == log_id)
        if after is not None:
            query = query.where(size > after)
        if through is not None:
            query = query.where(size <= through)
        query = query.order_by(size.desc() if newest_first else size)
        if limit is not None:
            query = query.limit(limit)
        with _translated("read checkpoints"), self.engine.connect() as conn:
            return [(_int(s, "audit_checkpoints.size"), _bytes(r, "audit_checkpoints.root_hash"),
                     _str(n, "audit_checkpoints.note")) for s, r, n in conn.execute(query)]

    def count_checkpoints(self, log_id: str, *, after: int = -1) -> int:
        """How many checkpoints of the log are of size above ``after``."""
        query = select(func.count()).select_from(CHECKPOINTS).where(
            CHECKPOINTS.c.log_id == log_id, CHECKPOINTS.c.size > after)
        with _translated("count checkpoints"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
