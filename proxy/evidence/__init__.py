"""Procurement evidence bundles: export a signed, self-contained zip for a time window, and
verify it offline (docs/procurement.md).

A bundle carries enclave identity documents with their attestation evidence, the policy
bundles in force, signed checkpoints with consistency proofs, the window's records (or a
sample) with inclusion proofs, a printable ``report.html`` mapping each artefact to the
controls it evidences, and a manifest of SHA-256 hashes signed by the log key.
"""

from ._errors import BundleInvalid, EvidenceError, ExportFailed
from ._export import ExportOptions, build_bundle, write_bundle
from ._state import (
    identity_documents,
    persist_identity,
    policy_snapshots,
    record_startup_state,
    snapshot_policy,
)
from ._verdict import BundleVerdict, Check
from ._verify import verify_bundle

__all__ = [
    "BundleInvalid",
    "BundleVerdict",
    "Check",
    "EvidenceError",
    "ExportFailed",
    "ExportOptions",
    "build_bundle",
    "identity_documents",
    "persist_identity",
    "policy_snapshots",
    "record_startup_state",
    "snapshot_policy",
    "verify_bundle",
    "write_bundle",
]
