"""The reviewer account table (in the tenant database, migration 0002)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

__all__ = ["UserRow"]


class UserRow(SQLModel, table=True):
    __tablename__ = "dashboard_users"

    id: str = Field(primary_key=True, max_length=40)
    username: str = Field(index=True, unique=True, max_length=64)
    role: str = Field(max_length=16)
    tenant: str | None = Field(default=None, max_length=64)
    password_hash: str = Field(max_length=255)
    created_at: datetime
