"""Tenants and API keys in the SQLite file under the data directory (alembic-managed)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from policy import TENANT_NAME
from proxy.errors import AuthenticationError, InvalidRequest, NotFound
from proxy.tenants._errors import StateUnavailable, state_errors
from proxy.tenants._models import VERSION_TABLE, ApiKeyRow, TenantRow

__all__ = ["ApiKeyInfo", "Tenant", "TenantStore", "open_engine"]

# Matched whole (``fullmatch``): with ``re.match``, ``$`` also matches before a final newline.
_NAME = TENANT_NAME  # contracts are looked up by these names: one rule for both
_KEY = re.compile(r"sg-([a-z0-9]{8})-[A-Za-z0-9_-]{32,64}")
_SHOWN = re.compile(r"sg-([a-z0-9]{8})(?:-…)?")  # a key as ``keys list`` shows it
_MIGRATIONS = Path(__file__).with_name("migrations")
# alembic keeps the running migration's context in module globals: one migration at a time.
_MIGRATING = threading.Lock()


@dataclass(frozen=True, slots=True)
class Tenant:
    """An authenticated tenant. ``pseudonym`` is what audit records carry."""

    id: str
    name: str
    pseudonym: str


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    tenant: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _driver(url: str) -> str:
    """PostgreSQL URLs use psycopg 3 (the driver this project installs)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _driver(url).replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the state database to the newest schema (alembic ``upgrade head``; the
    environment serializes concurrent migrations and refuses a newer release's schema)."""
    with _MIGRATING:
        command.upgrade(_config(url), "head")


def _at_head(engine: sa.Engine, url: str) -> bool:
    """Whether the schema is already this release's newest, as on most opens: those take no
    migration lock (on SQLite the write lock, which a long write elsewhere holds for longer
    than the busy timeout, and a read-only command need not wait for)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        current = set(context.get_current_heads())
    return current == set(ScriptDirectory.from_config(_config(url)).get_heads())


def _create_sqlite_file(url: str) -> None:
    """Create a new SQLite database file owner-only, before SQLite creates it 0644 under the
    usual umask: it holds scrypt and API-key hashes. SQLite gives the -journal, -wal and -shm
    files the mode of the database file."""
    parsed = sa.make_url(url)
    database = parsed.database or ":memory:"
    if parsed.get_backend_name() != "sqlite" or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_engine(url: str) -> sa.Engine:
    """The state database (tenants, keys, accounts), migrated to the newest schema. Errors
    never carry the bound parameters (``hide_parameters``): they are key and password hashes."""
    url = _driver(url)
    with state_errors("open the state database"):
        _create_sqlite_file(url)
        engine = sa.create_engine(url, hide_parameters=True, connect_args={
            "check_same_thread": False} if url.startswith("sqlite") else {})
        try:
            if not _at_head(engine, url):
                migrate(url)
        except BaseException:
            engine.dispose()
            raise
        return engine


class TenantStore:
    """Tenant/key administration and the request-path key lookup (with a short cache)."""

    def __init__(self, url: str, *, cache_ttl_s: float = 1.0) -> None:
        self._engine = open_engine(url)
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Tenant]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _session(self, operation: str) -> Iterator[Session]:
        """A session whose database errors are :class:`StateUnavailable`, naming ``operation``."""
        with state_errors(operation), Session(self._engine) as session:
            yield session

    def close(self) -> None:
        self._engine.dispose()

    # -- administration -----------------------------------------------------------------------
    def create_tenant(self, name: str, *, exist_ok: bool = False) -> Tenant:
        if not _NAME.fullmatch(name):
            raise InvalidRequest("tenant names are 1-63 characters: a-z 0-9 _ . -, starting "
                                 "with a letter or digit", param="name")
        with self._session("create a tenant") as session:
            row = _named(session, name)
            if row is None:
                row = TenantRow(id="ten_" + secrets.token_hex(8), name=name,
                                pseudonym="tp_" + secrets.token_hex(12), created_at=datetime.now(UTC))
                session.add(row)
                try:
                    session.commit()
                except IntegrityError:  # a concurrent caller created it since the select
                    session.rollback()
                    row = _named(session, name)
                    if row is None:  # another column collided: not this case
                        raise
                else:
                    return Tenant(row.id, row.name, row.pseudonym)
            if not exist_ok:
                raise InvalidRequest(f"tenant {name!r} already exists", code="tenant_exists")
            return Tenant(row.id, row.name, row.pseudonym)

    def tenants(self) -> list[Tenant]:
        with self._session("list tenants") as session:
            rows = session.exec(select(TenantRow).order_by(TenantRow.name)).all()
            return [Tenant(r.id, r.name, r.pseudonym) for r in rows]

    def tenant(self, name: str) -> Tenant:
        with self._session("look up a tenant") as session:
            row = _existing(session, name)
            return Tenant(row.id, row.name, row.pseudonym)

    def create_key(self, tenant_name: str) -> tuple[ApiKeyInfo, str]:
        """A new key for the tenant: (its record, the key itself — shown once, never stored)."""
        tenant = self.tenant(tenant_name)
        prefix = secrets.token_hex(4)
        key = f"sg-{prefix}-{secrets.token_urlsafe(32)}"
        row = ApiKeyRow(id="key_" + secrets.token_hex(8), tenant_id=tenant.id, prefix=prefix,
                        key_hash=_hash(key), created_at=datetime.now(UTC))
        with self._session("create an API key") as session:
            session.add(row)
            session.commit()
            return ApiKeyInfo(row.id, tenant.name, prefix, row.created_at, None), key

    def keys(self, tenant_name: str | None = None) -> list[ApiKeyInfo]:
        """Every key, or the named tenant's (a tenant that does not exist is an error, not an
        empty list: a misspelt name must not read as "no keys")."""
        query = select(ApiKeyRow, TenantRow).join(TenantRow)
        with self._session("list API keys") as session:
            if tenant_name is not None:
                query = query.where(TenantRow.id == _existing(session, tenant_name).id)
            ordered = query.order_by(sa.asc(ApiKeyRow.created_at))  # type: ignore[call-overload]
            return [ApiKeyInfo(k.id, t.name, k.prefix, k.created_at, k.revoked_at)
                    for k, t in session.exec(ordered).all()]

    def revoke_key(self, given: str) -> ApiKeyInfo:
        """Revoke the one key named by its id (``key_…``), its prefix (``sg-`` optional, as
        ``keys list`` shows it) or the key itself; a shared prefix is refused."""
        with self._session("revoke an API key") as session:
            rows = session.exec(select(ApiKeyRow).where(_naming(given))).all()
            if not rows:
                raise NotFound("no such API key", code="key_not_found")
            if len(rows) > 1:  # prefixes are 32 bits: picking one could revoke the wrong key
                raise InvalidRequest(_ambiguous(session, given, rows), code="key_ambiguous")
            row = rows[0]
            row.revoked_at = row.revoked_at or datetime.now(UTC)
            session.add(row)
            session.commit()
            tenant = session.get(TenantRow, row.tenant_id)
            name = tenant.name if tenant else ""
            info = ApiKeyInfo(row.id, name, row.prefix, row.created_at, row.revoked_at)
        with self._lock:
            self._cache.clear()
        return info

    # -- request path -------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of a ``Bearer`` key; :class:`AuthenticationError` otherwise."""
        found = self.cached(authorization)
        return found if found is not None else self.looked_up(authorization)

    async def resolve(self, authorization: str | None) -> Tenant:
        """``authenticate`` for the event loop: a key the cache does not hold is read off the
        loop (the database may be remote, and keys that do not exist are never cached)."""
        found = self.cached(authorization)
        return found if found is not None else await asyncio.to_thread(self.looked_up, authorization)

    async def owner(self, authorization: str | None) -> str | None:
        """The id of the tenant a ``Bearer`` key authenticates, or ``None`` for no valid key
        (or none that can be checked now): whom a sealed request's replay entry is counted
        against (``ReplayGuard``)."""
        if not authorization:
            return None
        try:
            return (await self.resolve(authorization)).id
        except (AuthenticationError, StateUnavailable):
            return None

    def cached(self, authorization: str | None) -> Tenant | None:
        """The tenant of a ``Bearer`` key if the cache holds it (no database read), else None;
        :class:`AuthenticationError` for what is no key at all."""
        digest = _digest(authorization)
        with self._lock:
            hit = self._cache.get(digest)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def looked_up(self, authorization: str | None) -> Tenant:
        """The tenant of a ``Bearer`` key, read from the database (and cached)."""
        digest, now = _digest(authorization), time.monotonic()
        tenant = self._lookup(digest)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, tenant)
        return tenant

    def _lookup(self, digest: str) -> Tenant:
        with self._session("check an API key") as session:
            found = session.exec(select(ApiKeyRow, TenantRow).join(TenantRow)
                                 .where(ApiKeyRow.key_hash == digest)).first()
        if found is None or found[0].revoked_at is not None:
            raise AuthenticationError("invalid API key")
        key, tenant = found
        if not hmac.compare_digest(key.key_hash, digest):
            raise AuthenticationError("invalid API key")
        return Tenant(tenant.id, tenant.name, tenant.pseudonym)


def _digest(authorization: str | None) -> str:
    """The stored digest of a ``Bearer`` key; :class:`AuthenticationError` for no key."""
    # RFC 9110 §11.1: the auth scheme is case-insensitive; §11.4: one or more spaces follow it.
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    if not _KEY.fullmatch(key):
        raise AuthenticationError("invalid API key")
    return _hash(key)


def _named(session: Session, name: str) -> TenantRow | None:
    return session.exec(select(TenantRow).where(TenantRow.name == name)).first()


def _existing(session: Session, name: str) -> TenantRow:
    row = _named(session, name)
    if row is None:
        raise NotFound(f"no tenant named {name!r}", code="tenant_not_found")
    return row


def _naming(given: str) -> sa.ColumnElement[bool]:
    """The keys ``given`` names. A whole key names only the key with its hash: a wrong key
    with a right prefix names none."""
    if _KEY.fullmatch(given):
        return col(ApiKeyRow.key_hash) == _hash(given)
    shown = _SHOWN.fullmatch(given)
    prefix = shown.group(1) if shown else given
    return (col(ApiKeyRow.id) == given) | (col(ApiKeyRow.prefix) == prefix)


def _ambiguous(session: Session, given: str, rows: Sequence[ApiKeyRow]) -> str:
    """Which keys share the prefix, by id and tenant (never the keys), and what to pass instead."""
    tenants = select(TenantRow).where(col(TenantRow.id).in_({r.tenant_id for r in rows}))
    names = {t.id: t.name for t in session.exec(tenants).all()}
    listed = ", ".join(f"{r.id} (tenant {names.get(r.tenant_id, '?')}"
                       f"{', revoked' if r.revoked_at else ''})"
                       for r in sorted(rows, key=lambda r: r.id))
    return (f"{given!r} matches {len(rows)} API keys: {listed}; nothing was revoked, "
            "name the key by its id (key_…) instead")
