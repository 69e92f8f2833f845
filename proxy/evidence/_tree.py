"""RFC 9162 §2.1.3/§2.1.4 proof generation from the audit store's perfect-subtree nodes.

The store keeps the hash of every complete perfect subtree as ``node_id = level * 2**48 + index``
(read-only here); a proof is a list of leaf ranges, each the fold of its perfect-subtree cover.
Verification is the audit package's (``verify_inclusion`` / ``verify_consistency``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from audit import ConsistencyProof, InclusionProof, LogStore

from ._errors import ExportFailed

__all__ = ["ProofSource"]

_NODE_SHIFT = 1 << 48


def _split(n: int) -> int:
    """RFC 9162 §2.1.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _cover(lo: int, hi: int) -> list[int]:
    out: list[int] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        while lo % (1 << level):
            level -= 1
        out.append(level * _NODE_SHIFT + (lo >> level))
        lo += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = hashlib.sha256(b"\x01" + h + root).digest()
    return root


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), leaf upwards."""
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    out: list[tuple[int, int]] = []
    lo, hi, whole = 0, new, True
    while old - lo != hi - lo:
        k = _split(hi - lo)
        if old - lo <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            whole = False
    if not whole:
        out.append((lo, hi))
    out.reverse()
    return out


class ProofSource:
    """Proofs for one log of a store, up to its integrated size."""

    def __init__(self, store: LogStore, log_id: str) -> None:
        self.store = store
        self.log_id = log_id

    def _hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> tuple[bytes, ...]:
        covers = [_cover(lo, hi) for lo, hi in ranges]
        nodes = self.store.get_nodes(self.log_id, [n for cover in covers for n in cover])
        try:
            return tuple(_fold([nodes[n] for n in cover]) for cover in covers)
        except KeyError as exc:
            raise ExportFailed("the stored tree lacks nodes for a proof") from exc

    def inclusion(self, index: int, size: int) -> InclusionProof:
        if not 0 <= index < size:
            raise ExportFailed("leaf index is outside the tree")
        return InclusionProof(index, size, self._hash_ranges(inclusion_ranges(index, size)))

    def consistency(self, old: int, new: int) -> ConsistencyProof:
        if not 0 < old <= new:
            raise ExportFailed("consistency needs 0 < old <= new")
        return ConsistencyProof(old, new, self._hash_ranges(consistency_ranges(old, new)))
