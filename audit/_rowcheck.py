"""Stored record rows checked against what the log signed: each row against its own signature
(its metadata columns restate the signed record), and its place in the tree against a signed
checkpoint. A reader that chooses rows by their columns (an evidence export) checks them so
first: columns nobody verified cannot hide a record from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._checkpoint import SignedCheckpoint
from ._errors import ProofError, VerificationError
from ._merkle import CompactRange, node_id, perfect_subtrees, verify_inclusion
from ._note import NoteVerifier
from ._proofs import InclusionProof, TreeReader
from ._rows import check_row, checked_row
from ._store import LogStore

__all__ = ["RowChecker", "Run"]


class RowChecker:
    """Checks rows of one log of ``store`` against its key (``vkey``) and ``checkpoint``, a
    checkpoint of that log already verified with the key."""

    def __init__(self, store: LogStore, log_id: str, vkey: str, checkpoint: SignedCheckpoint) -> None:
        self.log_id, self.checkpoint = log_id, checkpoint
        self.verifier = NoteVerifier.parse(vkey)
        self.store = store
        self._reader = TreeReader(store, log_id)

    def run(self, start: int) -> Run:
        """A :class:`Run` of consecutive rows from leaf ``start`` (below the checkpoint's size)."""
        return Run(self, start)

    def subtrees(self, lo: int, hi: int) -> list[tuple[int, bytes]]:
        """The stored perfect subtrees covering leaves [lo, hi), as (level, hash); unverified."""
        cover = perfect_subtrees(lo, hi)
        nodes = self.store.get_nodes(self.log_id, [node_id(level, i) for level, i in cover])
        try:
            return [(level, nodes[node_id(level, i)]) for level, i in cover]
        except KeyError:
            raise VerificationError("the stored tree is missing nodes") from None

    def signed(self, row: Any, index: int) -> bytes:
        """``VerificationError`` unless ``row`` is leaf ``index`` holding a record the key
        signed, with columns that restate it; returns its leaf hash. A record that names no log
        (written before records did) passes: the log writer integrates none after its log's
        first record that names it."""
        return check_row(row, index, self.verifier, self.log_id, legacy=True)

    def placed(self, row: Any, index: int) -> InclusionProof:
        """``signed``, and an inclusion proof from the stored tree, returned once it verifies
        against the checkpoint's signed root (``index`` lies below the checkpoint's size)."""
        return self.placed_all([(index, row)])[0]

    def placed_all(self, rows: Sequence[tuple[int, Any]]) -> list[InclusionProof]:
        """``placed`` for each ``(index, row)``, their proofs read from the store together."""
        leaves = [self.signed(row, index) for index, row in rows]
        size, root = self.checkpoint.size, self.checkpoint.root_hash
        try:
            proofs = self._reader.inclusions([index for index, _ in rows], size, size)
        except ProofError as exc:
            raise VerificationError(f"leaf {max(i for i, _ in rows)}: not in the signed tree "
                                    f"({exc.detail})") from None
        for (index, _), leaf, proof in zip(rows, leaves, proofs, strict=True):
            try:
                verify_inclusion(index, size, leaf, proof.hashes, root)
            except VerificationError as exc:
                raise VerificationError(f"leaf {index}: not in the signed tree ({exc.detail})") from None
        return proofs


class Run:
    """Consecutive rows checked as one: each against its record (its columns restate what it
    holds), and all of them together against the checkpoint's signed root, by hashing their
    leaves between the stored subtrees on either side (one range proof, RFC 9162 hashing)
    instead of an inclusion proof each. Whatever the stored subtrees, only the leaves of the
    signed tree give its root; and a leaf of that tree is a record the log signed (the log
    writer integrates no other), so the signatures need no check of their own here."""

    def __init__(self, checker: RowChecker, start: int) -> None:
        if not 0 <= start <= checker.checkpoint.size:
            raise ValueError("a run starts inside the checkpoint's tree")
        self._checker = checker
        self._legacy = True  # records that name no log come first, if any (``checked_row``)
        self._range = CompactRange()
        for level, value in checker.subtrees(0, start):
            self._range.append_subtree(level, value)

    @property
    def end(self) -> int:
        """The leaf the next row must be."""
        return self._range.size

    def add(self, row: Any) -> None:
        """``VerificationError`` unless ``row`` is leaf ``end``, below the checkpoint's size,
        with columns that restate the record it holds (proved in ``close``)."""
        index = self._range.size
        if index >= self._checker.checkpoint.size:
            raise VerificationError(f"leaf {index} is past the signed tree")
        leaf, named = checked_row(row, index, None, self._checker.log_id, legacy=self._legacy)
        self._legacy = self._legacy and not named
        self._range.append(leaf)

    def close(self) -> None:
        """``VerificationError`` unless the rows added are the signed tree's leaves."""
        size, root = self._checker.checkpoint.size, self._checker.checkpoint.root_hash
        for level, value in self._checker.subtrees(self._range.size, size):
            self._range.append_subtree(level, value)
        if self._range.root() != root:
            raise VerificationError("the records read are not the leaves of the signed tree")
