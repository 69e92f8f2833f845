"""Audit test plumbing: the anyio backend, the PostgreSQL cluster and store URLs for both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Record, RecordBuilder, commit
from tests.pg import PgCluster, postgresql  # noqa: F401  (session fixture)

ORIGIN = "sealgate.test/audit"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "sqlite-normal", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty audit database URL on each backend; ``sqlite-normal`` commits without
    fsync, so appends commit inline on the caller's thread when the writer is idle."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    if request.param == "sqlite-normal":
        return f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal"
    cluster: PgCluster = request.getfixturevalue("postgresql")
    return cluster.new_database()


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make_record(i: int = 0, tenant: str = "tenant-a", kind: str = "intent") -> Record:
    decision = "deny" if kind == "denial" else "allow"
    return (
        RecordBuilder(kind)
        .set(tenant=tenant, request_id=f"req-{i}", endpoint="/v1/chat/completions",
             decision=decision, channel="sealed", model="smollm2-135m", backend="llamacpp",
             retention_tier="none", rule_ids=["no_retention"], obligations=["store_false"],
             policy_bundle_digest="sha256:" + "ab" * 32, evidence_digest="sha256:" + "cd" * 32,
             platform="simulated", prompt_tokens=12, completion_tokens=3, latency_ms=1.25,
             stream=False, status=200, request_commitment=commit(b"k" * 32, f"in{i}".encode()))
        .build()
    )  # fmt: skip


@pytest.fixture
def record_factory() -> Callable[..., Record]:
    return make_record
