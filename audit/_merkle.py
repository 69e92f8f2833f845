"""RFC 9162 §2.1 Merkle tree hashing, proof shapes and proof verification.

Proof *generation* is expressed as lists of leaf ranges ``(lo, hi)``; each range is hashed from
stored perfect subtrees (see ``perfect_subtrees``), so no proof ever walks the leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ._errors import VerificationError

__all__ = [
    "HASH_SIZE",
    "CompactRange",
    "consistency_ranges",
    "empty_root",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# A node id packs (level, index) into one integer key: level * 2**48 + index.
NODE_ID_SHIFT = 1 << 48


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d}) = HASH(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x01 || MTH(left) || MTH(right))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    """RFC 9162 §2.1.1: the hash of an empty list is HASH()."""
    return hashlib.sha256(b"").digest()


def node_id(level: int, index: int) -> int:
    return level * NODE_ID_SHIFT + index


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1), RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """Cover [lo, hi) with aligned perfect subtrees, left to right, as (level, index).

    Every range in an RFC 9162 proof starts at a multiple of a power of two at least as large
    as its length, so its cover is the binary digits of its length, largest first.
    """
    out: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        while lo % (1 << level):
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Root of consecutive perfect subtrees listed left to right (RFC 9162 §2.1.1 recursion)."""
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]) as leaf ranges, ordered from the leaf upwards."""
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
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true) as leaf ranges (0 < m <= n)."""
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


def _check_len(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{name} is not a {HASH_SIZE}-byte hash")


def _shift_while(fn: int, sn: int, cond: Callable[[int], bool]) -> tuple[int, int]:
    while cond(fn):
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises VerificationError unless the proof holds."""
    _check_len("leaf hash", leaf)
    _check_len("root hash", root)
    if not 0 <= index < size:
        raise VerificationError("leaf index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_len("proof hash", p)
        if sn == 0:
            raise VerificationError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_while(fn, sn, lambda f: f != 0 and not f & 1)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise VerificationError("inclusion proof does not match the root")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raises VerificationError unless the proof holds.

    Size 0 is rejected (an empty tree proves nothing), as transparency-dev/merkle does.
    """
    if old <= 0 or old > new:
        raise VerificationError("consistency sizes out of order or empty")
    if old == new:
        if proof or old_root != new_root:
            raise VerificationError("equal sizes need an empty proof and equal roots")
        return
    _check_len("old root", old_root)
    _check_len("new root", new_root)
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise VerificationError("empty consistency proof")
    for p in path:
        _check_len("proof hash", p)
    fn, sn = _shift_while(old - 1, new - 1, lambda f: bool(f & 1))
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            fn, sn = _shift_while(fn, sn, lambda f: f != 0 and not f & 1)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise VerificationError("consistency proof does not match the roots")


class CompactRange:
    """The right border of a growing tree: the perfect subtrees covering [0, size).

    Appending a leaf merges equal-sized neighbours; the merged nodes are exactly the interior
    nodes that became complete, which the store persists. Memory is O(log size).
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != len(perfect_subtrees(0, size)):
            raise ValueError("compact range does not match its size")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> list[tuple[int, bytes]]:
        """Add a leaf hash; returns the new complete nodes as (node id, hash)."""
        index = self.size
        new = [(node_id(0, index), leaf)]
        self.hashes.append(leaf)
        level = 0
        while (index >> level) & 1:
            right = self.hashes.pop()
            left = self.hashes.pop()
            level += 1
            merged = node_hash(left, right)
            self.hashes.append(merged)
            new.append((node_id(level, index >> level), merged))
        self.size += 1
        return new

    def append_subtree(self, level: int, value: bytes) -> None:
        """Add an aligned perfect subtree of ``2**level`` leaves (``size`` a multiple of it)."""
        if self.size % (1 << level):
            raise ValueError("subtree is not aligned with the range's end")
        index = self.size >> level
        self.hashes.append(value)
        while index & 1:
            right = self.hashes.pop()
            self.hashes.append(node_hash(self.hashes.pop(), right))
            index >>= 1
        self.size += 1 << level

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else empty_root()
