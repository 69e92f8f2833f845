"""Canary: content passed through the record's only content path never reaches the disk."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, InvalidRecord, RecordBuilder, commit
from tests.audit.conftest import ORIGIN

pytestmark = pytest.mark.anyio


def _disk_contains(folder: Path, needle: bytes) -> list[str]:
    forms = [needle, base64.b64encode(needle), needle.hex().encode()]
    return [p.name for p in folder.rglob("*") if p.is_file()
            if any(f in p.read_bytes() for f in forms)]  # fmt: skip


async def test_canary_never_on_disk(tmp_path: Path) -> None:
    canary = f"CANARY-{secrets.token_hex(16)}"
    prompt = f"please keep this secret: {canary}".encode()
    key = secrets.token_bytes(32)
    log = await AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}",
                              Ed25519PrivateKey.generate(), ORIGIN)  # fmt: skip
    try:
        for i in range(20):
            record = (
                RecordBuilder("completion")
                .set(tenant="tenant-a", request_id=f"req-{i}", endpoint="/v1/chat/completions",
                     decision="allow", channel="sealed", request_commitment=commit(key, prompt),
                     response_commitment=commit(key, prompt[::-1]))
                .build()
            )  # fmt: skip
            await log.append(record)
        await log.publish()
        assert (tmp_path / "audit.db-wal").exists()
        assert _disk_contains(tmp_path, canary.encode()) == []
    finally:
        await log.close()
    assert _disk_contains(tmp_path, canary.encode()) == []


@pytest.mark.parametrize("field", ["model", "tenant", "request_id", "endpoint", "abort_reason"])
def test_content_in_identifier_fields_is_rejected(field: str) -> None:
    canary = f"CANARY-{secrets.token_hex(8)}"
    with pytest.raises(InvalidRecord) as info:
        RecordBuilder("intent").set(**{field: f"tell me about {canary}"})
    assert canary not in str(info.value)
