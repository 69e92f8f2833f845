"""A stored record row checked against the signed record it holds (verifier and log writer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._dsse import open_envelope, read_envelope
from ._errors import VerificationError
from ._merkle import leaf_hash
from ._note import NoteVerifier
from ._record import PREDICATE_TYPE
from ._store import _bytes

__all__ = ["check_row", "checked_row", "names_log", "time_us"]

# Metadata columns that must restate the signed predicate exactly.
_COLUMNS = ("kind", "tenant", "request_id", "decision", "channel", "endpoint", "model", "status")
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_ONE_US = datetime.fromisoformat("1970-01-01T00:00:00.000001+00:00") - _EPOCH


def time_us(value: str) -> int:
    """A record's ``time`` as microseconds since the epoch (its ``time_us`` column)."""
    return (datetime.fromisoformat(value.replace("Z", "+00:00")) - _EPOCH) // _ONE_US


def check_row(row: Any, expect_index: int, verifier: NoteVerifier | None, log_id: str, *,
              legacy: bool = False) -> bytes:
    """A stored row against its signed record; returns its leaf hash (``checked_row``)."""
    return checked_row(row, expect_index, verifier, log_id, legacy=legacy)[0]


def names_log(envelope: bytes) -> bool:
    """Whether a record (not verified here) names its log, as records have since they carry
    ``log_id``."""
    predicate = read_envelope(envelope).get("predicate")
    return isinstance(predicate, dict) and "log_id" in predicate


def checked_row(row: Any, expect_index: int, verifier: NoteVerifier | None, log_id: str, *,
                legacy: bool = False) -> tuple[bytes, bool]:
    """A stored row against its signed record; returns its leaf hash and whether the record
    names its log. Columns are compared type-strictly, since a database writer can put any
    type in them. Without ``verifier`` the signature is not checked: the caller proves the
    leaf hash in a tree the log key signed. ``legacy``: a record that names no log at all is
    accepted, as records written before they did (the caller allows them only in the part of
    a log written then, before its first record that names it)."""
    if type(row.leaf_index) is not int or row.leaf_index != expect_index:
        raise VerificationError(f"record indices have a gap at leaf {expect_index}")
    envelope = _bytes(row.envelope, f"audit_records.envelope of leaf {expect_index}")
    try:
        if verifier is None:
            statement = read_envelope(envelope)
        else:
            statement, _ = open_envelope(envelope, verifier.public_key, log_id)
    except VerificationError as exc:
        raise VerificationError(f"leaf {expect_index}: {exc.detail}") from None
    pred = statement.get("predicate", {})
    if statement.get("predicateType") != PREDICATE_TYPE or not isinstance(pred, dict):
        raise VerificationError(f"leaf {expect_index}: not a proof-of-secrecy statement")
    named = "log_id" in pred
    if pred.get("log_id") != log_id and (named or not legacy):  # the keyid is not signed
        raise VerificationError(f"leaf {expect_index}: the record was signed for another log")
    stored = {c: getattr(row, c) for c in _COLUMNS}
    signed = {c: pred.get(c) for c in _COLUMNS}
    try:
        signed_time = time_us(str(pred.get("time")))
    except ValueError:
        raise VerificationError(f"leaf {expect_index}: the record's time is invalid") from None
    if stored != signed or type(row.time_us) is not int or row.time_us != signed_time:
        raise VerificationError(f"leaf {expect_index}: metadata columns differ from the record")
    return leaf_hash(envelope), named
