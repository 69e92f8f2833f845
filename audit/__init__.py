"""Proof-of-secrecy records, their RFC 9162 Merkle log with C2SP checkpoints, and storage.

A record is an in-toto Statement v1 in a DSSE envelope signed with the log's Ed25519 key; it
holds metadata and HMAC commitments only, never content. ``AuditLog`` appends records durably
(with the Merkle tree nodes they complete, in the same transaction) and publishes signed
checkpoints.
"""

from ._checkpoint import SignedCheckpoint
from ._errors import (
    AuditError,
    AuditUnavailable,
    CorruptStore,
    InvalidRecord,
    ProofError,
    RecordNotFound,
    VerificationError,
)
from ._keys import load_or_create_signing_key
from ._log import AuditLog
from ._merkle import verify_consistency, verify_inclusion
from ._note import check_name as check_note_name
from ._note import vkey_for
from ._proofs import ConsistencyProof, InclusionProof, TreeReader
from ._receipt import Receipt
from ._record import IDENTIFIER, PREDICATE_TYPE, Record, RecordBuilder, commit
from ._rowcheck import RowChecker, Run
from ._store import LogStore
from ._verify import VerifyReport, verify_log, verify_receipt

__all__ = [
    "IDENTIFIER",
    "PREDICATE_TYPE",
    "AuditError",
    "AuditLog",
    "AuditUnavailable",
    "ConsistencyProof",
    "CorruptStore",
    "InclusionProof",
    "InvalidRecord",
    "LogStore",
    "ProofError",
    "Receipt",
    "Record",
    "RecordBuilder",
    "RecordNotFound",
    "RowChecker",
    "Run",
    "SignedCheckpoint",
    "TreeReader",
    "VerificationError",
    "VerifyReport",
    "check_note_name",
    "commit",
    "load_or_create_signing_key",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_receipt",
    "vkey_for",
]
