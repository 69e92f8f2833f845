"""Reviewer accounts: create, list, authenticate, change passwords, remove, end sessions.
Roles: admin, reviewer, auditor."""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from proxy.tenants import open_engine, state_errors

from ._errors import InvalidCredentials, UserError
from ._models import UserRow
from ._passwords import hash_password, verify_password

__all__ = ["ROLES", "User", "UserStore"]

ROLES = ("admin", "reviewer", "auditor")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")  # fullmatch: ``$`` matches before a "\n"
_MIN_PASSWORD = 12
# Compared against when the user is unknown, so both failures cost one scrypt.
_DUMMY = hash_password(secrets.token_hex(16))


@dataclass(frozen=True, slots=True)
class User:
    """A dashboard account. ``tenant`` (a tenant name) limits a reviewer to that tenant;
    ``session_generation`` is what its valid session cookies carry."""

    id: str
    username: str
    role: str
    tenant: str | None
    session_generation: int = 0

    @property
    def can_export(self) -> bool:
        return self.role in ("admin", "auditor")


_TABLE: sa.Table = UserRow.__table__  # type: ignore[attr-defined]


def _check_password(password: str) -> None:
    if len(password) < _MIN_PASSWORD:
        raise UserError(f"passwords have at least {_MIN_PASSWORD} characters", code="weak_password")


def _user(row: UserRow) -> User:
    return User(row.id, row.username, row.role, row.tenant, row.session_generation)


class UserStore:
    """Accounts in the tenant database (``sqlite:///…/sealgate.db``).

    Session checks go through a short cache (``cache_ttl_s``, as API-key lookups in
    ``TenantStore``): ending sessions takes effect at once in this process and within the TTL in
    every other process sharing the database. The database failing is
    :class:`proxy.tenants.StateUnavailable`, as for the tenants it shares the database with.
    """

    def __init__(self, url: str, *, cache_ttl_s: float = 1.0) -> None:
        self._engine = open_engine(url)
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._ended: dict[str, int] = {}  # sign-outs seen by this process, per account
        self._lock = threading.Lock()

    def close(self) -> None:
        self._engine.dispose()

    def create(self, username: str, role: str, password: str, tenant: str | None = None) -> User:
        if not _NAME.fullmatch(username):
            raise UserError("user names are 1-64 characters: a-z 0-9 _ . @ -", code="invalid_name")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        if tenant is not None and role != "reviewer":
            raise UserError("only reviewers are limited to one tenant", code="invalid_role")
        if tenant == "":  # would read as "every tenant" in listings, and match none
            raise UserError("a reviewer's tenant must be named", code="invalid_tenant")
        _check_password(password)
        row = UserRow(id="usr_" + secrets.token_hex(8), username=username, role=role,
                      tenant=tenant, password_hash=hash_password(password),
                      created_at=datetime.now(UTC))
        with state_errors("create an account"):
            try:
                with Session(self._engine, expire_on_commit=False) as session:
                    session.add(row)
                    session.commit()
            except IntegrityError as exc:  # the name (the only other unique column: a random id)
                raise UserError(f"user {username!r} already exists", code="user_exists") from exc
        return _user(row)

    def users(self) -> list[User]:
        with state_errors("list accounts"), Session(self._engine) as session:
            rows = session.exec(select(UserRow).order_by(UserRow.username)).all()
            return [_user(r) for r in rows]

    def get(self, user_id: str) -> User | None:
        with state_errors("read an account"), Session(self._engine) as session:
            row = session.get(UserRow, user_id)
            return None if row is None else _user(row)

    def session_user(self, user_id: str, generation: int) -> User | None:
        """The account of a session issued under ``generation``, or None once that generation
        has ended. A generation newer than the cached one skips the cache (a sign-in elsewhere)."""
        now = time.monotonic()
        with self._lock:
            hit, ended = self._cache.get(user_id), self._ended.get(user_id, 0)
        user = hit[1] if hit is not None else None
        if hit is None or hit[0] <= now or (user is not None and user.session_generation < generation):
            user = self.get(user_id)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                # A sign-out since the read above would be undone by caching what it read.
                if self._ended.get(user_id, 0) == ended:
                    self._cache[user_id] = (now + self._ttl, user)
        return user if user is not None and user.session_generation == generation else None

    def set_password(self, username: str, password: str) -> None:
        """Replace the account's password; every session it has ends with the old one."""
        _check_password(password)
        digest = hash_password(password)
        self._change("change a password", username, _TABLE.update().values(
            password_hash=digest, session_generation=_TABLE.c.session_generation + 1))

    def remove(self, username: str) -> None:
        """Delete the account; its sessions stop working with it."""
        self._change("remove an account", username, _TABLE.delete())

    def _change(self, operation: str, username: str, statement: sa.Update | sa.Delete) -> None:
        """Apply ``statement`` to the named account and forget what this process cached of
        it (other processes see the change within the cache TTL, as for a sign-out)."""
        where = _TABLE.c.username == username
        with state_errors(operation), self._engine.begin() as conn:
            user_id = conn.execute(sa.select(_TABLE.c.id).where(where)).scalar()
            if user_id is None:
                raise UserError(f"no user {username!r}", code="user_not_found")
            conn.execute(statement.where(where))
        self._forget(user_id)

    def end_sessions(self, user_id: str) -> None:
        """End every session of the account (sign-out): its cookies' generation is now stale."""
        # One atomic increment, whoever else signs out.
        with state_errors("end an account's sessions"), self._engine.begin() as conn:
            conn.execute(_TABLE.update().where(_TABLE.c.id == user_id)
                         .values(session_generation=_TABLE.c.session_generation + 1))
        self._forget(user_id)

    def _forget(self, user_id: str) -> None:
        """Drop what this process cached of the account, and count the change (a session check
        that read the account before it must not cache what it read)."""
        with self._lock:
            self._cache.pop(user_id, None)
            self._ended[user_id] = self._ended.get(user_id, 0) + 1

    def authenticate(self, username: str, password: str) -> User:
        row = None
        # A name no account can have is not looked up (PostgreSQL refuses a NUL in a query
        # parameter: bad input, not a failing database); it still costs the one scrypt below.
        if _NAME.fullmatch(username):
            with state_errors("sign in"), Session(self._engine) as session:
                row = session.exec(select(UserRow).where(UserRow.username == username)).first()
        stored = row.password_hash if row is not None else _DUMMY
        if not verify_password(password, stored) or row is None:
            raise InvalidCredentials("invalid user name or password")
        return _user(row)
