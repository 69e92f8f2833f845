"""Verification entry points: one piece of evidence, and a whole identity document."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._binding import compute_report_data
from ._collateral import Collateral
from ._errors import VerificationError, translate
from ._evidence import Evidence, text_field
from ._nvidia import gpu_nonce, verify_nvidia
from ._policy import VerificationPolicy, apply_policy
from ._simulated import verify_simulated
from ._snp import verify_sev_snp
from ._tdx import verify_tdx
from ._verdict import EvidenceVerdict, Trace
from ._x509 import resolve_time

__all__ = ["VerifiedIdentity", "verify_evidence", "verify_identity"]


def verify_evidence(
    evidence: Evidence,
    *,
    collateral: Collateral | None = None,
    at: datetime | None = None,
    trace: Trace | None = None,
) -> EvidenceVerdict:
    """Verify one piece of evidence by platform (no policy, no GPU binding). Whatever the
    parsers or the crypto library raise on crafted input is a ``VerificationError``."""
    with translate("report_malformed", f"{evidence.platform} evidence"):
        return _verify_platform(evidence, collateral, at, trace)


def _verify_platform(evidence: Evidence, collateral: Collateral | None, at: datetime | None,
                     trace: Trace | None) -> EvidenceVerdict:
    extra = collateral.certificates if collateral is not None else b""
    if evidence.platform == "sev-snp":
        certs = evidence.certificates + b"\n" + extra if extra else evidence.certificates
        return verify_sev_snp(evidence.report, certs, at=at, trace=trace)
    if evidence.platform == "tdx":
        return verify_tdx(evidence.report, collateral, at=at, trace=trace)
    if evidence.platform == "nvidia":
        return verify_nvidia(evidence.report, evidence.certificates, at=at, trace=trace)
    if evidence.platform == "simulated":
        return verify_simulated(evidence.report, trace=trace)
    raise VerificationError("platform_not_allowed", f"unknown platform {evidence.platform!r}")


@dataclass(frozen=True)
class VerifiedIdentity:
    """An enclave identity that passed verification and policy."""

    key_configs: bytes
    """The OHTTP key configurations (``application/ohttp-keys``) bound by REPORT_DATA."""
    audit_public_key: bytes
    """The Ed25519 audit signing key (raw 32 bytes)."""
    policy_digest: str
    """The policy bundle digest (``sha256:...``)."""
    measurement: str
    """The verified launch measurement (hex), or the simulated one."""
    platform: str
    """``sev-snp``, ``tdx`` or ``simulated``."""
    simulated: bool
    """True when the evidence came from the insecure simulated provider."""
    evidence_digest: str
    """``sha256:`` over the RFC 8785 encoding of the document's evidence object."""
    tcb_status: str | None
    """Vendor TCB status where evaluated (TDX), else None."""
    checks: tuple[str, ...] = ()
    """Every check that passed, in order."""
    notes: tuple[str, ...] = ()
    """Caveats the caller should see (no allowlist, simulated accepted)."""
    gpus: tuple[Mapping[str, Any], ...] = ()
    """Claims of each verified GPU (driver and VBIOS versions, measurements)."""


def _field(document: Mapping[str, Any], name: str) -> Any:
    if name not in document:
        raise VerificationError("document_malformed", f"identity document lacks {name!r}")
    return document[name]


def _b64(document: Mapping[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(_field(document, name), validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise VerificationError("document_malformed", f"{name} is not base64") from exc


def _created(document: Mapping[str, Any]) -> tuple[str, datetime]:
    """The ``created`` string as bound into REPORT_DATA, and the time it names."""
    text = _field(document, "created")
    try:
        return text, resolve_time(datetime.fromisoformat(text))
    except (TypeError, ValueError) as exc:
        raise VerificationError("document_malformed", "created is not an ISO time") from exc


_CLOCK_SKEW_S = 60.0


def _check_age(created: datetime, policy: VerificationPolicy, when: datetime) -> None:
    """With ``max_age_s``, the document must be that recent, and not from the future either
    (beyond clock skew): a host that pushes the enclave's clock forward could otherwise mint a
    document that never ages."""
    if policy.max_age_s is None:
        return
    age = (when - created).total_seconds()
    if not age <= policy.max_age_s:  # also a NaN limit: refuse rather than skip the check
        raise VerificationError("document_expired", "identity document is too old")
    if age < -_CLOCK_SKEW_S:
        raise VerificationError("document_expired", "identity document is dated in the future")


def verify_identity(
    document: Mapping[str, Any],
    policy: VerificationPolicy,
    *,
    nonce: bytes | None = None,
    now: datetime | None = None,
    collateral: Collateral | None = None,
    trace: Trace | None = None,
) -> VerifiedIdentity:
    """Verify an identity document: key binding, platform evidence, policy, nonce echo.

    ``trace``, when given, receives the name of each check as it passes (also on failure).
    """
    if not isinstance(document, Mapping) or document.get("version") != 1:
        raise VerificationError("document_malformed", "not a version 1 identity document")
    evidence = Evidence.from_json(_field(document, "evidence"))
    if evidence.platform == "simulated" and not policy.allow_simulated:
        raise VerificationError("simulated_not_allowed", "evidence is simulated (insecure)")
    doc_nonce = None if document.get("nonce") is None else _b64(document, "nonce")
    if nonce is not None and doc_nonce != nonce:
        raise VerificationError("nonce_mismatch", "document does not echo our nonce")
    key_configs, audit_key = _b64(document, "key_configs"), _b64(document, "audit_public_key")
    digest = text_field(_field(document, "policy_digest"), "policy_digest")
    measurement = text_field(_field(document, "measurement"), "measurement")
    created_text, created = _created(document)
    expected = compute_report_data(key_configs, audit_key, digest, measurement, doc_nonce,
                                   created_text)
    when = resolve_time(now)
    trace = [] if trace is None else trace
    verdict = verify_evidence(evidence, collateral=collateral, at=when, trace=trace)
    if verdict.report_data != expected:
        raise VerificationError("report_data_mismatch", "REPORT_DATA does not bind the document")
    trace.append("REPORT_DATA binds key configs, audit key, policy digest, measurement, nonce, "
                 "creation time")
    if verdict.measurement.lower() != measurement.lower():
        detail = "document measurement differs from the evidence"
        raise VerificationError("measurement_mismatch", detail)
    gpus = tuple(_verify_gpu(gpu, expected, when, trace) for gpu in evidence.gpus)
    notes = apply_policy(verdict, policy)
    _check_age(created, policy, when)
    trace.append("policy satisfied")
    return VerifiedIdentity(
        key_configs=key_configs, audit_public_key=audit_key, policy_digest=digest,
        measurement=verdict.measurement, platform=verdict.platform, simulated=verdict.simulated,
        evidence_digest=evidence.digest(), tcb_status=verdict.tcb_status, checks=tuple(trace),
        notes=tuple(notes), gpus=gpus,
    )


def _verify_gpu(gpu: Evidence, report_data: bytes, when: datetime,
                trace: Trace) -> Mapping[str, Any]:
    if gpu.platform != "nvidia":
        raise VerificationError("platform_not_allowed", "GPU evidence must be nvidia")
    with translate("report_malformed", "GPU evidence"):
        verdict = verify_nvidia(gpu.report, gpu.certificates,
                                expected_nonce=gpu_nonce(report_data), at=when)
    trace.append("GPU evidence verified and bound to REPORT_DATA by its nonce")
    return verdict.claims
