"""Proof objects and their computation from the stored perfect subtrees of one log."""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import AuditUnavailable, ProofError, VerificationError
from ._merkle import (
    consistency_ranges,
    empty_root,
    fold,
    inclusion_ranges,
    node_id,
    perfect_subtrees,
)
from ._store import LogStore

__all__ = ["ConsistencyProof", "InclusionProof", "TreeReader"]


def _b64(hashes: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def _unb64(values: Any) -> tuple[bytes, ...]:
    if not isinstance(values, list):
        raise VerificationError("proof hashes must be a list")
    try:
        return tuple(base64.b64decode(v, validate=True) for v in values)
    except (TypeError, ValueError, binascii.Error) as exc:
        raise VerificationError("malformed proof hash") from exc


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is not int:
        raise VerificationError(f"proof field {key!r} must be an integer")
    return value


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 §2.1.3 audit path for leaf ``index`` in the tree of ``size`` leaves."""

    index: int
    size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "size": self.size, "hashes": _b64(self.hashes)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> InclusionProof:
        return cls(_int(obj, "index"), _int(obj, "size"), _unb64(obj.get("hashes")))


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4 proof that the tree of ``old`` leaves is a prefix of the one of ``new``."""

    old: int
    new: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"from": self.old, "to": self.new, "hashes": _b64(self.hashes)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ConsistencyProof:
        return cls(_int(obj, "from"), _int(obj, "to"), _unb64(obj.get("hashes")))


class TreeReader:
    """Hashes any proof range of one log with a single query for its perfect subtrees."""

    def __init__(self, store: LogStore, log_id: str) -> None:
        self.store = store
        self.log_id = log_id

    def _hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        covers = [[node_id(lv, i) for lv, i in perfect_subtrees(lo, hi)] for lo, hi in ranges]
        wanted = dict.fromkeys(n for cover in covers for n in cover)  # once each, in order
        nodes = self.store.get_nodes(self.log_id, list(wanted))
        try:
            return [fold([nodes[n] for n in cover]) for cover in covers]
        except KeyError as exc:
            raise AuditUnavailable("stored tree is missing nodes") from exc

    def root(self, size: int) -> bytes:
        return self._hash_ranges([(0, size)])[0] if size else empty_root()

    def inclusion(self, index: int, size: int, integrated: int) -> InclusionProof:
        if not 0 < size <= integrated:
            raise ProofError("tree size is not published")
        if not 0 <= index < size:
            raise ProofError("leaf index is outside the tree")
        hashes = self._hash_ranges(inclusion_ranges(index, size))
        return InclusionProof(index, size, tuple(hashes))

    def inclusions(self, indices: Sequence[int], size: int, integrated: int) -> list[InclusionProof]:
        """``inclusion`` of each of ``indices``, with one query for them all: neighbouring
        leaves share most of their proofs' subtrees."""
        if not 0 < size <= integrated:
            raise ProofError("tree size is not published")
        if not all(0 <= index < size for index in indices):
            raise ProofError("leaf index is outside the tree")
        paths = [inclusion_ranges(index, size) for index in indices]
        hashes = iter(self._hash_ranges([r for path in paths for r in path]))
        return [InclusionProof(index, size, tuple(itertools.islice(hashes, len(path))))
                for index, path in zip(indices, paths, strict=True)]

    def consistency(self, old: int, new: int, integrated: int) -> ConsistencyProof:
        if not 0 < old <= new <= integrated:
            raise ProofError("sizes must satisfy 0 < from <= to <= published size")
        hashes = self._hash_ranges(consistency_ranges(old, new))
        return ConsistencyProof(old, new, tuple(hashes))
