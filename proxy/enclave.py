"""The enclave's own identity: OHTTP keys, evidence provider and the facts policy needs."""

from __future__ import annotations

from typing import Any

from proxy.attestation import Evidence, IdentityService, VerificationError, verify_evidence
from proxy.gate import EnclaveFacts

__all__ = ["enclave_facts"]


async def enclave_facts(identity: IdentityService) -> EnclaveFacts:
    """Collect evidence once at start-up and read what policy and records need from it.

    The gateway checks its own evidence with the same verifier a client uses; if that fails,
    start-up fails (fail closed) rather than serving under an identity nobody could verify.
    That includes what a client checks beyond the evidence itself: its REPORT_DATA must be the
    document's, and its measurement the document's (a release measurement left unset or
    mistyped would otherwise serve a document every client refuses).
    """
    document: dict[str, Any] = await identity.document()
    evidence = Evidence.from_json(document["evidence"])
    verdict = verify_evidence(evidence)
    if verdict.report_data.hex() != document["report_data"]:
        raise VerificationError("report_data_mismatch", "evidence does not carry this document's "
                                "REPORT_DATA")
    if verdict.measurement.lower() != str(document["measurement"]).lower():
        raise VerificationError("measurement_mismatch", "the release measurement "
                                f"{document['measurement']!r} is not the evidence's "
                                f"{verdict.measurement!r}")
    return EnclaveFacts(platform=verdict.platform, measurement=verdict.measurement,
                        simulated=verdict.simulated, debug=verdict.debug,
                        evidence_digest=evidence.digest(),
                        policy_digest=str(document["policy_digest"]))
