"""The enforcement point's completion record: what it says is fixed when its request ends, though
it is built, signed and stored afterwards, in the background."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog
from policy import Decision, RegopyEngine
from proxy.gate import EnclaveFacts, PolicyAuditGate
from proxy.pipeline import Admission, CallContext, Outcome
from proxy.tenants import Tenant

_DIGEST = "sha256:" + "d" * 64


def _facts(evidence: str) -> EnclaveFacts:
    return EnclaveFacts(platform="simulated", measurement="00" * 48, simulated=True, debug=False,
                        evidence_digest="sha256:" + evidence * 64)


def test_a_completion_record_carries_what_held_when_its_request_ended(tmp_path: Path) -> None:
    async def run() -> dict[str, object]:
        log = await AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal",
                                  Ed25519PrivateKey.generate(), "sealgate.test/audit")
        engine = RegopyEngine()
        gate = PolicyAuditGate(engine, log, _facts("a"), mode="development", region="test",
                               allow_plaintext=True, timeout_s=1.0)
        ctx = CallContext(request_id="req_gate", path="/v1/chat/completions",
                          endpoint="/v1/chat/completions", method="POST", channel="sealed",
                          commitment_key=b"k" * 32, tenant=Tenant("t-1", "acme", "tp_gate"))
        ctx.commit_request(b"{}")
        decision = Decision(allow=True, deny=(), obligations={}, bundle_digest=_DIGEST)
        try:
            await gate.finish(ctx, Admission(decision=decision), Outcome(200, 3, 5))
            # New evidence (a key rotation, a policy reload) lands before the record is built.
            gate.enclave = _facts("b")
            await gate.drain()
            [row] = await log.request_records("tp_gate", "req_gate")
        finally:
            await log.close()
            await engine.aclose()
        envelope = json.loads(row["envelope"])
        statement: dict[str, object] = json.loads(base64.b64decode(envelope["payload"]))
        return statement

    statement = asyncio.run(run())
    predicate = statement["predicate"]
    assert isinstance(predicate, dict)
    assert predicate["kind"] == "completion" and predicate["evidence_digest"] == "sha256:" + "a" * 64
    assert (predicate["prompt_tokens"], predicate["completion_tokens"]) == (3, 5)
