"""Offline verification: a whole stored log (``verify_log``) and one client receipt."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._checkpoint import SignedCheckpoint
from ._dsse import open_envelope
from ._errors import CorruptStore, VerificationError
from ._merkle import CompactRange, empty_root, leaf_hash, verify_consistency, verify_inclusion
from ._note import NoteVerifier
from ._proofs import InclusionProof, TreeReader
from ._receipt import Receipt
from ._record import PREDICATE_TYPE, STATEMENT_TYPE
from ._rows import checked_row
from ._store import LogStore

__all__ = ["VerifyReport", "verify_log", "verify_receipt"]

Progress = Callable[[int, int], None]
_CHUNK = 2000


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_log`` checked for one log."""

    log_id: str
    origin: str
    records: int
    integrated: int
    checkpoints: int
    latest: SignedCheckpoint | None


class _LogCheck:
    """Recomputes one log's tree from its envelopes and compares every stored artefact.

    Records and checkpoints are read in pages, in order, and each checkpoint is checked when
    the recomputed tree reaches its size: memory stays bounded however long the log (a log
    that publishes a checkpoint a second holds 86,400 of them a day).

    A running gateway goes on appending while this reads (each page its own read), so the log
    is verified as it stood when the check began: the integrated size read then bounds the
    records and checkpoints checked first. What lies beyond it is checked next (no stray
    records, no checkpoint past the records); a fault found there counts only if nothing was
    appended meanwhile, as on a stopped gateway.
    """

    def __init__(self, store: LogStore, log: tuple[str, str, str, int], progress: Progress | None,
                 trusted: SignedCheckpoint | None = None):
        self.store, self.progress = store, progress
        self.log_id, self.origin, vkey, self.integrated = log
        self.vkey = vkey
        self.verifier = NoteVerifier.parse(vkey)
        if self.verifier.key_id.hex() != self.log_id or self.verifier.name != self.origin:
            raise VerificationError("log id or origin does not match the log key")
        self.reader = TreeReader(store, self.log_id)
        self.trusted = trusted
        self.trusted_root: bytes | None = None  # the recomputed root at the trusted size
        self.checkpoints = 0
        self.latest: SignedCheckpoint | None = None
        self.legacy = True
        """Records that name no log are still accepted: none that names it came yet."""
        self._pending = self._stored_checkpoints()
        self._next = next(self._pending, None)

    def _stored_checkpoints(self) -> Iterator[SignedCheckpoint]:
        """The checkpoints up to the integrated size read at the start, in order."""
        return self._checkpoints(-1, self.integrated)

    def _beyond(self, bound: int) -> Iterator[SignedCheckpoint]:
        """The checkpoints over more than ``bound`` records, in order."""
        return self._checkpoints(bound, None)

    def _checkpoints(self, after: int, through: int | None) -> Iterator[SignedCheckpoint]:
        while page := self.store.checkpoints(self.log_id, after=after, through=through,
                                             limit=_CHUNK):
            for size, root, note in page:
                yield self._checkpoint(size, root, note)
            after = page[-1][0]

    def _checkpoint(self, size: int, root: bytes, note: str) -> SignedCheckpoint:
        return SignedCheckpoint.stored(size, root, note, self.vkey, self.origin)

    def _reached(self, size: int, root: bytes) -> None:
        """The recomputed tree has ``size`` records and ``root``: check the checkpoint of that
        size, if any, and its consistency with the one before it."""
        if self.trusted is not None and self.trusted.size == size:
            self.trusted_root = root
        cp = self._next
        if cp is None or cp.size != size:
            return
        if size > self.integrated or cp.root_hash != root:
            raise VerificationError(f"checkpoint {size} does not match the records")
        old = self.latest
        if old is not None and old.size > 0:
            proof = self.reader.consistency(old.size, size, self.integrated)
            verify_consistency(old.size, size, old.root_hash, root, proof.hashes)
        self.latest, self.checkpoints = cp, self.checkpoints + 1
        self._next = next(self._pending, None)

    def _compare_nodes(self, nodes: list[tuple[int, bytes]]) -> None:
        stored = self.store.get_nodes(self.log_id, [n for n, _ in nodes])
        for n, h in nodes:
            if stored.get(n) != h:
                raise VerificationError(f"stored tree node {n} does not match the records")

    def _records(self, rng: CompactRange, done: int, stop: int | None) -> int:
        """Check the records from ``done`` on (up to ``stop``), extending ``rng``; the stored
        tree nodes are compared up to the integrated size. Returns how many there are."""
        while stop is None or done < stop:
            limit = _CHUNK if stop is None else min(_CHUNK, stop - done)
            rows = self.store.record_rows(self.log_id, done, limit)
            nodes: list[tuple[int, bytes]] = []
            for row in rows:
                leaf, named = checked_row(row, done, self.verifier, self.log_id,
                                          legacy=self.legacy)
                self.legacy = self.legacy and not named  # a log's unnamed records come first
                new = rng.append(leaf)
                done += 1
                if done <= self.integrated:
                    nodes.extend(new)
                self._reached(done, rng.root())
            self._compare_nodes(nodes)
            if self.progress is not None:
                self.progress(done, max(done, self.integrated))
            if len(rows) < limit:
                break
        return done

    def run(self) -> int:
        bound, rng = self.integrated, CompactRange()
        self._reached(0, empty_root())
        done = self._records(rng, 0, bound)
        if done < bound:
            raise VerificationError("integrated size exceeds the stored records")
        # Rows at a negative index are in no tree.
        if (below := self.store.count_records(self.log_id, below=bound)) != bound:
            raise VerificationError(f"{below - bound} stored records are outside the log's leaves")
        if self._next is not None:  # a checkpoint that the records do not reach
            raise VerificationError(f"checkpoint {self._next.size} does not match the records")
        if (repeated := self.store.repeated_record(self.log_id, 0, bound)) is not None:
            raise VerificationError(f"request {repeated[0]} has two {repeated[1]} records "
                                    "(a signed record stored twice)")
        try:
            done = self._rest(rng, bound)
        except VerificationError:
            if self._integrated_now() == bound:
                raise
            # Appended meanwhile (a running gateway): the log as it stood is what was verified.
        if self.trusted is not None:
            self.check_extends(self.trusted)
        return done

    def _rest(self, rng: CompactRange, bound: int) -> int:
        """What lies past the integrated size read at the start, checked as it stands: records
        not integrated yet (the writer integrates them when it starts), no row past a gap, no
        checkpoint past the records. Returns the count of records checked in all."""
        self._next = next(self._beyond(bound), None)
        done = self._records(rng, bound, None)
        if (total := self.store.count_records(self.log_id)) != done:
            raise VerificationError(f"{total - done} stored records are outside the log's leaves")
        if done > bound and (repeated := self.store.repeated_record(self.log_id, bound, done)):
            raise VerificationError(f"request {repeated[0]} has two {repeated[1]} records "
                                    "(a signed record stored twice)")
        if self._next is not None:  # a checkpoint over more records than there are
            raise VerificationError(f"checkpoint {self._next.size} does not match the records")
        return done

    def _integrated_now(self) -> int | None:
        return next((size for log_id, _, _, size in self.store.logs() if log_id == self.log_id),
                    None)

    def check_extends(self, trusted: SignedCheckpoint) -> None:
        """The kept checkpoint is a prefix of the records and of the latest stored checkpoint
        (RFC 9162 §2.1.4.2): a smaller or rewritten log is a rollback or a fork."""
        latest = self.latest
        if (self.trusted_root != trusted.root_hash
                or latest is None or latest.size < trusted.size):
            raise VerificationError(
                f"the log is not an extension of the given checkpoint (size {trusted.size})")
        if trusted.size > 0:
            proof = self.reader.consistency(trusted.size, latest.size, self.integrated)
            verify_consistency(trusted.size, latest.size, trusted.root_hash, latest.root_hash,
                               proof.hashes)


def _trusted_log(logs: list[tuple[str, str, str, int]], note: str) -> tuple[str, SignedCheckpoint]:
    """The id of the log whose key signed the kept checkpoint ``note``, and the checkpoint."""
    origin = note.split("\n", 1)[0]
    error = f"no log in the store has the given checkpoint's origin {origin[:64]!r}"
    for log_id, log_origin, vkey, _size in logs:
        if log_origin == origin:
            try:
                return log_id, SignedCheckpoint.parse(note, vkey, origin)
            except VerificationError as exc:
                error = f"the given checkpoint does not verify under the key of log {log_id}: {exc.detail}"
    raise VerificationError(error)


def verify_log(
    store: LogStore,
    from_checkpoint: str | None = None,
    progress: Progress | None = None,
    *,
    vkey: str | None = None,
) -> list[VerifyReport]:
    """Verify every log in ``store`` (or only the one of ``vkey``, pinning its key).

    Recomputes each tree from the stored envelopes, checks every envelope signature, every
    checkpoint signature and root, every stored tree node, and consistency between consecutive
    checkpoints. ``from_checkpoint`` (a signed note kept from earlier) is verified first: a log
    in the store must have signed it (same origin and key), and that log's records and latest
    checkpoint must extend it. Raises ``VerificationError`` on the first discrepancy, and when
    the store holds no log at all, or a stored value of the wrong type.
    """
    try:
        return _verify_logs(store, from_checkpoint, progress, vkey)
    except CorruptStore as exc:
        raise VerificationError(exc.detail) from None


def _verify_logs(store: LogStore, from_checkpoint: str | None, progress: Progress | None,
                 vkey: str | None) -> list[VerifyReport]:
    logs = store.logs()
    if not logs:
        raise VerificationError("the store holds no log")
    if vkey is not None:
        pinned = NoteVerifier.parse(vkey)
        logs = [log for log in logs if log[0] == pinned.key_id.hex()]
        if not logs or logs[0][2] != vkey:
            raise VerificationError("no log with that key in the store")
    trusted_id, trusted = None, None
    if from_checkpoint is not None:
        trusted_id, trusted = _trusted_log(logs, from_checkpoint)
    if orphans := store.unregistered_rows():
        raise VerificationError(f"{orphans} stored rows belong to no log in the store")
    reports = []
    for log in logs:
        check = _LogCheck(store, log, progress, trusted if log[0] == trusted_id else None)
        size = check.run()
        reports.append(VerifyReport(check.log_id, check.origin, size, check.integrated,
                                    check.checkpoints, check.latest))
    return reports


def verify_receipt(
    receipt: Receipt | str,
    envelope: bytes,
    checkpoint_note: str,
    inclusion_proof: InclusionProof | dict[str, Any],
    log_public_key: str,
) -> dict[str, Any]:
    """Check a receipt end to end against the log's verifier key; returns the statement.

    The envelope must carry the receipt's signature under the log key, and its leaf must be
    included (RFC 9162 §2.1.3.2) in the tree of the signed checkpoint.
    """
    if isinstance(receipt, str):
        receipt = Receipt.parse(receipt)
    if isinstance(inclusion_proof, dict):
        inclusion_proof = InclusionProof.from_json(inclusion_proof)
    if not isinstance(inclusion_proof, InclusionProof):  # e.g. a JSON list or null from a file
        raise VerificationError("inclusion proof must be a JSON object")
    verifier = NoteVerifier.parse(log_public_key)
    if receipt.log_id != verifier.key_id.hex():
        raise VerificationError("receipt is from a different log")
    checkpoint = SignedCheckpoint.parse(checkpoint_note, log_public_key)
    statement, sig = open_envelope(envelope, verifier.public_key, receipt.log_id)
    try:
        same_sig = base64.b64decode(receipt.signature, validate=True) == sig
    except (ValueError, binascii.Error):
        same_sig = False
    if not same_sig:
        raise VerificationError("receipt signature does not match the envelope")
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError("envelope is not a proof-of-secrecy statement")
    predicate = statement.get("predicate")
    # A record that names no log was written before records did; the log writer integrates
    # none after its log's first record that names it.
    if not isinstance(predicate, dict) or predicate.get("log_id", receipt.log_id) != receipt.log_id:
        raise VerificationError("the record was signed for another log")
    if (inclusion_proof.index, inclusion_proof.size) != (receipt.leaf_index, checkpoint.size):
        raise VerificationError("inclusion proof is for another leaf or tree size")
    verify_inclusion(
        receipt.leaf_index, checkpoint.size, leaf_hash(envelope),
        inclusion_proof.hashes, checkpoint.root_hash,
    )  # fmt: skip
    return statement
