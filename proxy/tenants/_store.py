"""Tenants and API keys in the SQLite file under the data directory (alembic-managed)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
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
from sqlmodel import Session, col, select

from proxy.errors import AuthenticationError, InvalidRequest, NotFound
from proxy.tenants._models import ApiKeyRow, TenantRow

__all__ = ["ApiKeyInfo", "Tenant", "TenantStore", "open_engine"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_KEY = re.compile(r"^sg-([a-z0-9]{8})-[A-Za-z0-9_-]{32,64}$")
_MIGRATIONS = Path(__file__).with_name("migrations")


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


def migrate(url: str) -> None:
    """Bring the tenant database to the newest schema (alembic ``upgrade head``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _driver(url).replace("%", "%%"))
    command.upgrade(cfg, "head")


def open_engine(url: str) -> sa.Engine:
    """The state database (tenants, keys, accounts), migrated to the newest schema."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    url = _driver(url)
    migrate(url)
    return sa.create_engine(url, connect_args={"check_same_thread": False}
                            if url.startswith("sqlite") else {})


class TenantStore:
    """Tenant/key administration and the request-path key lookup (with a short cache)."""

    def __init__(self, url: str, *, cache_ttl_s: float = 1.0) -> None:
        self._engine = open_engine(url)
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Tenant]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self._engine) as session:
            yield session

    def close(self) -> None:
        self._engine.dispose()

    # -- administration -----------------------------------------------------------------------
    def create_tenant(self, name: str, *, exist_ok: bool = False) -> Tenant:
        if not _NAME.match(name):
            raise InvalidRequest("tenant names are 1-63 characters: a-z 0-9 _ . -", param="name")
        with self._session() as session:
            row = session.exec(select(TenantRow).where(TenantRow.name == name)).first()
            if row is not None:
                if not exist_ok:
                    raise InvalidRequest(f"tenant {name!r} already exists", code="tenant_exists")
                return Tenant(row.id, row.name, row.pseudonym)
            row = TenantRow(id="ten_" + secrets.token_hex(8), name=name,
                            pseudonym="tp_" + secrets.token_hex(12), created_at=datetime.now(UTC))
            session.add(row)
            session.commit()
            return Tenant(row.id, row.name, row.pseudonym)

    def tenants(self) -> list[Tenant]:
        with self._session() as session:
            rows = session.exec(select(TenantRow).order_by(TenantRow.name)).all()
            return [Tenant(r.id, r.name, r.pseudonym) for r in rows]

    def tenant(self, name: str) -> Tenant:
        with self._session() as session:
            row = session.exec(select(TenantRow).where(TenantRow.name == name)).first()
            if row is None:
                raise NotFound(f"no tenant named {name!r}", code="tenant_not_found")
            return Tenant(row.id, row.name, row.pseudonym)

    def create_key(self, tenant_name: str) -> tuple[ApiKeyInfo, str]:
        """A new key for the tenant: (its record, the key itself — shown once, never stored)."""
        tenant = self.tenant(tenant_name)
        prefix = secrets.token_hex(4)
        key = f"sg-{prefix}-{secrets.token_urlsafe(32)}"
        row = ApiKeyRow(id="key_" + secrets.token_hex(8), tenant_id=tenant.id, prefix=prefix,
                        key_hash=_hash(key), created_at=datetime.now(UTC))
        with self._session() as session:
            session.add(row)
            session.commit()
            return ApiKeyInfo(row.id, tenant.name, prefix, row.created_at, None), key

    def keys(self, tenant_name: str | None = None) -> list[ApiKeyInfo]:
        query = select(ApiKeyRow, TenantRow).join(TenantRow)
        if tenant_name is not None:
            query = query.where(TenantRow.name == tenant_name)
        with self._session() as session:
            ordered = query.order_by(sa.asc(ApiKeyRow.created_at))  # type: ignore[call-overload]
            return [ApiKeyInfo(k.id, t.name, k.prefix, k.created_at, k.revoked_at)
                    for k, t in session.exec(ordered).all()]

    def revoke_key(self, key_id_or_prefix: str) -> ApiKeyInfo:
        """Revoke the one key with this id (``key_…``) or prefix; a shared prefix is refused."""
        with self._session() as session:
            rows = session.exec(select(ApiKeyRow).where(
                (ApiKeyRow.id == key_id_or_prefix) | (ApiKeyRow.prefix == key_id_or_prefix))).all()
            if not rows:
                raise NotFound("no such API key", code="key_not_found")
            if len(rows) > 1:  # prefixes are 32 bits: picking one could revoke the wrong key
                raise InvalidRequest(_ambiguous(session, key_id_or_prefix, rows), code="key_ambiguous")
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
        # RFC 9110 §11.1: the auth scheme is case-insensitive; §11.4: one or more spaces follow it.
        scheme, _, key = (authorization or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        if not _KEY.match(key):
            raise AuthenticationError("invalid API key")
        digest = _hash(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        tenant = self._lookup(digest)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, tenant)
        return tenant

    def _lookup(self, digest: str) -> Tenant:
        with self._session() as session:
            found = session.exec(select(ApiKeyRow, TenantRow).join(TenantRow)
                                 .where(ApiKeyRow.key_hash == digest)).first()
        if found is None or found[0].revoked_at is not None:
            raise AuthenticationError("invalid API key")
        key, tenant = found
        if not hmac.compare_digest(key.key_hash, digest):
            raise AuthenticationError("invalid API key")
        return Tenant(tenant.id, tenant.name, tenant.pseudonym)


def _ambiguous(session: Session, given: str, rows: Sequence[ApiKeyRow]) -> str:
    """Which keys share the prefix, by id and tenant (never the keys), and what to pass instead."""
    tenants = select(TenantRow).where(col(TenantRow.id).in_({r.tenant_id for r in rows}))
    names = {t.id: t.name for t in session.exec(tenants).all()}
    listed = ", ".join(f"{r.id} (tenant {names.get(r.tenant_id, '?')}"
                       f"{', revoked' if r.revoked_at else ''})"
                       for r in sorted(rows, key=lambda r: r.id))
    return (f"{given!r} matches {len(rows)} API keys: {listed}; nothing was revoked, "
            "name the key by its id (key_…) instead")
