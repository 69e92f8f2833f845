"""Errors of the audit package: one root, stable string codes, an HTTP status each."""

from __future__ import annotations

__all__ = [
    "AuditBusy",
    "AuditError",
    "AuditUnavailable",
    "CorruptStore",
    "InvalidRecord",
    "ProofError",
    "RecordNotFound",
    "VerificationError",
]


class AuditError(Exception):
    """Root of every audit error. ``str(err)`` is ``"CODE: detail"``."""

    code = "audit_error"
    status = 500
    type = "server_error"
    param: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class AuditUnavailable(AuditError):
    """The log store cannot make a record durable; the request must not be forwarded."""

    code = "audit_unavailable"
    status = 503


class DatabaseTooNew(AuditUnavailable):
    """The audit database's schema is a newer release's: this one neither reads nor upgrades
    it."""

    code = "database_too_new"


class AuditBusy(AuditUnavailable):
    """The store is locked by another process and the caller chose not to wait: nothing was
    written (the log writer then commits the record itself, waiting for the lock)."""


class CorruptStore(AuditError):
    """A stored value has the wrong type (SQLite columns accept any): the store was written by
    something other than the gateway."""

    code = "audit_store_corrupt"


class InvalidRecord(AuditError):
    """A record field is unknown, set twice, missing, or outside its type/charset/length."""

    code = "invalid_record"


class RecordNotFound(AuditError):
    """No record with that id is visible to the caller (absent and foreign look the same)."""

    code = "record_not_found"
    status = 404
    type = "invalid_request_error"


class ProofError(AuditError):
    """A proof was asked for sizes or indices that the published tree cannot answer."""

    code = "invalid_proof_request"
    status = 400
    type = "invalid_request_error"


class VerificationError(AuditError):
    """A signature, proof, checkpoint or stored log failed verification."""

    code = "verification_failed"
    status = 400
    type = "invalid_request_error"
