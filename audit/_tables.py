"""Tables of the audit store. Every table carries ``log_id``: several logs share one database."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Text
from sqlmodel import Field, SQLModel

__all__ = ["VERSION_TABLE", "CheckpointRow", "LogRow", "NodeRow", "RecordRow"]

VERSION_TABLE = "audit_alembic_version"
"""alembic's version table for the audit schema: the state database may share the database."""


class LogRow(SQLModel, table=True):
    """One log: its identity and how far its Merkle tree is integrated."""

    __tablename__ = "audit_logs"
    log_id: str = Field(sa_column=Column(String(64), primary_key=True))
    origin: str = Field(sa_column=Column(String(255), nullable=False))
    vkey: str = Field(sa_column=Column(String(512), nullable=False))
    integrated_size: int = Field(sa_column=Column(BigInteger, nullable=False))


class RecordRow(SQLModel, table=True):
    """A signed record (DSSE envelope bytes) plus metadata columns for filtering."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_log_time", "log_id", "time_us"),
        Index("ix_audit_records_log_tenant", "log_id", "tenant"),
        Index("ix_audit_records_tenant_request", "tenant", "request_id"),
    )
    log_id: str = Field(sa_column=Column(String(64), primary_key=True))
    leaf_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    record_id: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    envelope: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    tenant: str = Field(sa_column=Column(String(128), nullable=False))
    request_id: str = Field(sa_column=Column(String(128), nullable=False))
    time_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    decision: str = Field(sa_column=Column(String(8), nullable=False))
    channel: str = Field(sa_column=Column(String(16), nullable=False))
    endpoint: str = Field(sa_column=Column(String(128), nullable=False))
    model: str | None = Field(default=None, sa_column=Column(String(128)))
    status: int | None = Field(default=None, sa_column=Column(BigInteger))


class NodeRow(SQLModel, table=True):
    """A complete Merkle subtree root: node_id = level * 2**48 + index (level 0 = leaf hashes)."""

    __tablename__ = "audit_nodes"
    log_id: str = Field(sa_column=Column(String(64), primary_key=True))
    node_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class CheckpointRow(SQLModel, table=True):
    """A published signed checkpoint (C2SP tlog-checkpoint note)."""

    __tablename__ = "audit_checkpoints"
    log_id: str = Field(sa_column=Column(String(64), primary_key=True))
    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    time_us: int = Field(sa_column=Column(BigInteger, nullable=False))
