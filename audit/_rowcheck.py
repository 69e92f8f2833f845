"""Stored record rows checked against what the log signed: each row against its own signature
(its metadata columns restate the signed record), and its place in the tree against a signed
checkpoint. A reader that chooses rows by their columns (an evidence export) checks them so
first: columns nobody verified cannot hide a record from it."""

from __future__ import annotations

from typing import Any

from ._checkpoint import SignedCheckpoint
from ._errors import ProofError, VerificationError
from ._merkle import verify_inclusion
from ._note import NoteVerifier
from ._proofs import InclusionProof, TreeReader
from ._rows import check_row
from ._store import LogStore

__all__ = ["RowChecker"]


class RowChecker:
    """Checks rows of one log of ``store`` against its key (``vkey``) and ``checkpoint``, a
    checkpoint of that log already verified with the key."""

    def __init__(self, store: LogStore, log_id: str, vkey: str, checkpoint: SignedCheckpoint) -> None:
        self.log_id, self.checkpoint = log_id, checkpoint
        self.verifier = NoteVerifier.parse(vkey)
        self._reader = TreeReader(store, log_id)

    def signed(self, row: Any, index: int) -> bytes:
        """``VerificationError`` unless ``row`` is leaf ``index`` holding a record the key
        signed, with columns that restate it; returns its leaf hash."""
        return check_row(row, index, self.verifier, self.log_id)

    def placed(self, row: Any, index: int) -> InclusionProof:
        """``signed``, and an inclusion proof from the stored tree, returned once it verifies
        against the checkpoint's signed root (``index`` lies below the checkpoint's size)."""
        leaf = self.signed(row, index)
        size = self.checkpoint.size
        try:
            proof = self._reader.inclusion(index, size, size)
            verify_inclusion(index, size, leaf, proof.hashes, self.checkpoint.root_hash)
        except (ProofError, VerificationError) as exc:
            raise VerificationError(f"leaf {index}: not in the signed tree ({exc.detail})") from None
        return proof
