"""Tenant and API key tables. Only a SHA-256 of each key is stored."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

__all__ = ["VERSION_TABLE", "ApiKeyRow", "TenantRow"]

# alembic's version table for this database: its own, since the audit log may share the database
# (one PostgreSQL in a cluster). Releases before that used alembic's default, ``alembic_version``.
VERSION_TABLE = "sealgate_state_version"


class TenantRow(SQLModel, table=True):
    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(index=True, unique=True, max_length=64)
    pseudonym: str = Field(unique=True, max_length=40)
    created_at: datetime


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    prefix: str = Field(index=True, max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime
    revoked_at: datetime | None = None
