"""Reviewer accounts: create, list, authenticate. Roles: admin, reviewer, auditor."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from proxy.tenants import open_engine

from ._errors import InvalidCredentials, UserError
from ._models import UserRow
from ._passwords import hash_password, verify_password

__all__ = ["ROLES", "User", "UserStore"]

ROLES = ("admin", "reviewer", "auditor")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
_MIN_PASSWORD = 12
# Compared against when the user is unknown, so both failures cost one scrypt.
_DUMMY = hash_password(secrets.token_hex(16))


@dataclass(frozen=True, slots=True)
class User:
    """A dashboard account. ``tenant`` (a tenant name) limits a reviewer to that tenant."""

    id: str
    username: str
    role: str
    tenant: str | None

    @property
    def can_export(self) -> bool:
        return self.role in ("admin", "auditor")


class UserStore:
    """Accounts in the tenant database (``sqlite:///…/sealgate.db``)."""

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)

    def close(self) -> None:
        self._engine.dispose()

    def create(self, username: str, role: str, password: str, tenant: str | None = None) -> User:
        if not _NAME.match(username):
            raise UserError("user names are 1-64 characters: a-z 0-9 _ . @ -", code="invalid_name")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        if tenant is not None and role != "reviewer":
            raise UserError("only reviewers are limited to one tenant", code="invalid_role")
        if len(password) < _MIN_PASSWORD:
            raise UserError(f"passwords have at least {_MIN_PASSWORD} characters",
                            code="weak_password")
        row = UserRow(id="usr_" + secrets.token_hex(8), username=username, role=role,
                      tenant=tenant, password_hash=hash_password(password),
                      created_at=datetime.now(UTC))
        try:
            with Session(self._engine, expire_on_commit=False) as session:
                session.add(row)
                session.commit()
        except IntegrityError as exc:
            raise UserError(f"user {username!r} already exists", code="user_exists") from exc
        return User(row.id, username, role, tenant)

    def users(self) -> list[User]:
        with Session(self._engine) as session:
            rows = session.exec(select(UserRow).order_by(UserRow.username)).all()
            return [User(r.id, r.username, r.role, r.tenant) for r in rows]

    def get(self, user_id: str) -> User | None:
        with Session(self._engine) as session:
            row = session.get(UserRow, user_id)
            return None if row is None else User(row.id, row.username, row.role, row.tenant)

    def authenticate(self, username: str, password: str) -> User:
        with Session(self._engine) as session:
            row = session.exec(select(UserRow).where(UserRow.username == username)).first()
        stored = row.password_hash if row is not None else _DUMMY
        if not verify_password(password, stored) or row is None:
            raise InvalidCredentials("invalid user name or password")
        return User(row.id, row.username, row.role, row.tenant)
