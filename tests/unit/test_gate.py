"""The enforcement point's completion record: what it says is fixed when its request ends, though
it is built, signed and stored afterwards, in the background."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog
from inference import ModelRoute, RetentionTier
from policy import Decision, PolicyBundle, PolicyUnavailable, RegopyEngine, load_bundle
from proxy.gate import EnclaveFacts, PolicyAuditGate
from proxy.pipeline import Admission, CallContext, Outcome
from proxy.tenants import Tenant

_DIGEST = "sha256:" + "d" * 64


def _facts(evidence: str) -> EnclaveFacts:
    return EnclaveFacts(platform="simulated", measurement="00" * 48, simulated=True, debug=False,
                        evidence_digest="sha256:" + evidence * 64, policy_digest=_DIGEST)


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


def _reloaded(tmp_path: Path) -> PolicyBundle:
    """The shipped bundle with one more file: a new digest, the same decisions."""
    root = tmp_path / "bundle"
    shutil.copytree(Path(__file__).resolve().parents[2] / "policy" / "rego", root / "rego")
    shutil.copytree(Path(__file__).resolve().parents[2] / "policy" / "data", root / "data")
    (root / "data" / "extra.json").write_text('{"note": {"reloaded": true}}')
    return load_bundle(root)


def _call(request_id: str) -> CallContext:
    ctx = CallContext(request_id=request_id, path="/v1/chat/completions",
                      endpoint="/v1/chat/completions", method="POST", channel="sealed",
                      commitment_key=b"k" * 32, tenant=Tenant("t-1", "dev", "tp_reload"))
    ctx.route = ModelRoute("m", "local", RetentionTier.ATTESTED_ZERO)
    ctx.commit_request(b"{}")
    return ctx


def _facts_of(bundle_digest: str, evidence: str) -> EnclaveFacts:
    return EnclaveFacts(platform="simulated", measurement="00" * 48, simulated=True, debug=False,
                        evidence_digest="sha256:" + evidence * 64, policy_digest=bundle_digest)


def test_after_a_reload_records_wait_for_the_evidence_that_binds_the_new_bundle(tmp_path: Path) -> None:
    """A reload switches the engine first and collects new evidence after: a decision on the
    new bundle is recorded with that new evidence once it is there, never with the old evidence
    (which binds the old digest); without it in time, nothing is forwarded (fail closed). A
    decision made on the old bundle keeps the old evidence."""
    new = _reloaded(tmp_path)

    async def run() -> tuple[list[dict[str, object]], str]:
        log = await AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal",
                                  Ed25519PrivateKey.generate(), "sealgate.test/audit")
        engine = RegopyEngine()
        old = engine.bundle_digest
        gate = PolicyAuditGate(engine, log, _facts_of(old, "a"), mode="development",
                               region="local", allow_plaintext=False, timeout_s=0.5)
        params = {"model": "m", "messages": []}
        try:
            await gate.admit(_call("req_old"), params)
            engine.reload(new)  # the watcher's poll; evidence for it is collected afterwards
            with pytest.raises(PolicyUnavailable):
                await gate.admit(_call("req_early"), params)  # none came within the timeout
            waiting = asyncio.create_task(gate.admit(_call("req_new"), params))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            gate.enclave = _facts_of(new.digest, "b")
            await waiting
            # Still kept: the old bundle's evidence, for decisions made on it.
            assert (await gate._facts_for(old)).evidence_digest == "sha256:" + "a" * 64
            rows = [row for request in ("req_old", "req_early", "req_new")
                    for row in await log.request_records("tp_reload", request)]
        finally:
            await log.close()
            await engine.aclose()
        return [_predicate(row) for row in rows], old

    predicates, old = asyncio.run(run())
    assert [(p["request_id"], p["policy_bundle_digest"], p["evidence_digest"]) for p in predicates] == [
        ("req_old", old, "sha256:" + "a" * 64), ("req_new", new.digest, "sha256:" + "b" * 64)]


def _predicate(row: dict[str, object]) -> dict[str, object]:
    envelope = json.loads(str(row["envelope"]) if not isinstance(row["envelope"], bytes)
                          else row["envelope"].decode())
    predicate: dict[str, object] = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    return predicate
