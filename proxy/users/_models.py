"""The reviewer account table (in the tenant database, migrations 0002 and 0003)."""

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
    # Session cookies carry the generation they were issued under; bumping it (sign-out) ends
    # every earlier session of the account, in every gateway process sharing the database.
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
