"""Which control each bundle artefact evidences (docs/procurement.md, "Control mapping")."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTROLS", "Control"]


@dataclass(frozen=True)
class Control:
    artefact: str
    """Bundle path (or glob) of the artefact."""
    what: str
    """What the artefact shows."""
    controls: tuple[str, ...]
    """Control references it supports."""


CONTROLS: tuple[Control, ...] = (
    Control("records/records.jsonl",
            "Signed proof-of-secrecy record of every decision in the window (metadata and "
            "HMAC commitments only; no prompt or completion text).",
            ("EU AI Act Art. 12(1)-(2) automatic recording of events",
             "EU AI Act Art. 19(1) automatically generated logs kept by the provider",
             "EU AI Act Art. 26(6) deployer keeps logs at least six months",
             "SOC 2 CC7.2 monitoring of system components", "SOC 2 CC7.3 evaluation of events",
             "ISO/IEC 27001:2022 A.8.15 Logging")),
    Control("checkpoints/*.note, checkpoints/consistency.json",
            "Signed Merkle tree heads (C2SP checkpoints) and RFC 9162 consistency proofs: the "
            "log only grew; nothing was removed or rewritten.",
            ("ISO/IEC 27001:2022 A.8.15 protection of log information against tampering",
             "EU AI Act Art. 12 traceability (integrity of logs)",
             "SOC 2 CC7.2 integrity of monitoring data")),
    Control("records/records.jsonl (inclusion proofs)",
            "RFC 9162 inclusion proof of each exported record in the latest signed checkpoint.",
            ("ISO/IEC 27001:2022 A.8.15 Logging", "EU AI Act Art. 19 retention of complete logs")),
    Control("identity/*.json",
            "Enclave identity documents: hardware attestation evidence binding the OHTTP keys, "
            "the audit signing key, the policy digest and the release measurement.",
            ("SOC 2 CC6.1 logical access security and encryption",
             "SOC 2 CC6.7 protection of data in transmission",
             "ISO/IEC 27001:2022 A.8.16 Monitoring activities (platform state)",
             "GDPR Art. 28(3)(c) and Art. 32 security of processing")),
    Control("policies/*",
            "The Rego policies and contract data in force, their digests and the time windows "
            "in which records cite them (no retention, no training use).",
            ("GDPR Art. 28(3)(a) processing only on documented instructions",
             "GDPR Art. 28(3)(g) no retention after the service",
             "ISO/IEC 27001:2022 A.5.34 Privacy and protection of PII",
             "SOC 2 CC6.1 access restrictions by policy")),
    Control("manifest.json, manifest.sig",
            "SHA-256 of every file, signed with the log key bound by the attestation.",
            ("ISO/IEC 27001:2022 A.8.15 Logging (integrity of exported logs)",
             "EU AI Act Art. 19 logs available to authorities")),
)
