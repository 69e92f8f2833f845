"""The enclave's own identity: OHTTP keys, evidence provider and the facts policy needs."""

from __future__ import annotations

from typing import Any

from proxy.attestation import Evidence, IdentityService, verify_evidence
from proxy.gate import EnclaveFacts

__all__ = ["enclave_facts"]


async def enclave_facts(identity: IdentityService) -> EnclaveFacts:
    """Collect evidence once at start-up and read what policy and records need from it.

    The gateway checks its own evidence with the same verifier a client uses; if that fails,
    start-up fails (fail closed) rather than serving under an identity nobody could verify.
    """
    document: dict[str, Any] = await identity.document()
    evidence = Evidence.from_json(document["evidence"])
    verdict = verify_evidence(evidence)
    return EnclaveFacts(platform=verdict.platform, measurement=verdict.measurement,
                        simulated=verdict.simulated, debug=verdict.debug,
                        evidence_digest=evidence.digest())
