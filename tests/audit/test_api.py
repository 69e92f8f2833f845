"""The audit routes in a real Litestar app (the proxy's exception handler, DI as the app does)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import AsyncTestClient

from audit import AuditLog, ConsistencyProof, SignedCheckpoint, verify_consistency, verify_receipt
from proxy.api.audit import audit_handlers
from proxy.errors import exception_handler
from tests.audit.conftest import ORIGIN, make_record

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class AuthenticatedTenant:
    id: str
    pseudonym: str


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient[Litestar], AuditLog]]:
    log = await AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}", Ed25519PrivateKey.generate(),
                              ORIGIN)  # fmt: skip

    async def provide_log() -> AuditLog:
        return log

    async def provide_tenant() -> AuthenticatedTenant:
        return AuthenticatedTenant("t-1", "tenant-a")

    app = Litestar(
        route_handlers=audit_handlers,
        dependencies={"audit_log": Provide(provide_log), "tenant": Provide(provide_tenant)},
        exception_handlers={Exception: exception_handler},
    )
    async with AsyncTestClient(app) as client:
        yield client, log
    await log.close()


async def test_receipt_verifies_from_api_answers(
    served: tuple[AsyncTestClient[Litestar], AuditLog],
) -> None:
    client, log = served
    receipts = [await log.append(make_record(i)) for i in range(9)]
    first = await log.publish()
    receipts.append(await log.append(make_record(9, tenant="tenant-b")))
    await log.publish()

    note = (await client.get("/v1/audit/checkpoint")).text
    checkpoint = SignedCheckpoint.parse(note, log.vkey)
    assert checkpoint.size == 10
    envelope = await client.get(f"/v1/audit/records/{receipts[4].record_id}")
    assert envelope.status_code == 200 and envelope.headers["content-type"].startswith(
        "application/json")
    proof = await client.get("/v1/audit/proof/inclusion", params={"index": 4, "size": 10})
    statement = verify_receipt(receipts[4].to_header(), envelope.content, note, proof.json(),
                               log.vkey)  # fmt: skip
    assert statement["predicate"]["request_id"] == "req-4"

    cons = await client.get("/v1/audit/proof/consistency", params={"from": first.size, "to": 10})
    body = cons.json()
    assert all(len(base64.b64decode(h)) == 32 for h in body["hashes"])
    proof_obj = ConsistencyProof.from_json(body)
    verify_consistency(first.size, 10, first.root_hash, checkpoint.root_hash, proof_obj.hashes)


async def test_errors_are_openai_envelopes(
    served: tuple[AsyncTestClient[Litestar], AuditLog],
) -> None:
    client, log = served
    foreign = await log.append(make_record(0, tenant="tenant-b"))
    await log.publish()
    for path, params, status, code in [
        (f"/v1/audit/records/{foreign.record_id}", None, 404, "record_not_found"),
        ("/v1/audit/records/not-an-id", None, 404, "record_not_found"),
        ("/v1/audit/proof/inclusion", {"index": 5}, 400, "invalid_proof_request"),
        ("/v1/audit/proof/consistency", {"from": 2, "to": 1}, 400, "invalid_proof_request"),
    ]:
        response = await client.get(path, params=params)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and isinstance(error["message"], str)
        assert set(error) == {"message", "type", "param", "code"}
