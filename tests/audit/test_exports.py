"""The audit package's public surface is exactly this."""

from __future__ import annotations

import audit


def test_all_is_exact() -> None:
    assert sorted(audit.__all__) == sorted([
        "IDENTIFIER", "PREDICATE_TYPE", "AuditError", "AuditLog", "AuditUnavailable", "ConsistencyProof",
        "CorruptStore",
        "InclusionProof", "InvalidRecord", "LogStore", "ProofError", "Receipt", "Record",
        "RecordBuilder", "RecordNotFound", "RowChecker", "Run", "SignedCheckpoint", "TreeReader",
        "VerificationError",
        "VerifyReport",
        "check_note_name", "commit", "load_or_create_signing_key", "verify_consistency", "verify_inclusion",
        "verify_log", "verify_receipt", "vkey_for",
    ])  # fmt: skip
    for name in audit.__all__:
        assert hasattr(audit, name)


def test_errors_share_one_root_with_string_codes() -> None:
    errors = [audit.AuditUnavailable, audit.CorruptStore, audit.InvalidRecord, audit.ProofError,
              audit.RecordNotFound, audit.VerificationError]  # fmt: skip
    assert all(issubclass(e, audit.AuditError) for e in errors)
    assert len({e.code for e in errors}) == len(errors)
    err = audit.AuditUnavailable("store down")
    assert str(err) == "audit_unavailable: store down" and err.status == 503


def test_audit_never_imports_proxy() -> None:
    import pathlib

    for path in pathlib.Path(audit.__file__).parent.rglob("*.py"):
        source = path.read_text()
        assert "import proxy" not in source and "from proxy" not in source, path
