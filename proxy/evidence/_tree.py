"""Proofs for an export, from the audit store's tree (``audit.TreeReader``), read-only.

Verification is the audit package's (``verify_inclusion`` / ``verify_consistency``); errors of
the store are translated at this seam into :class:`ExportFailed`.
"""

from __future__ import annotations

from audit import AuditError, ConsistencyProof, InclusionProof, LogStore, TreeReader

from ._errors import ExportFailed

__all__ = ["ProofSource"]


class ProofSource:
    """Proofs for one log of a store, up to a tree size the caller knows is integrated."""

    def __init__(self, store: LogStore, log_id: str) -> None:
        self._reader = TreeReader(store, log_id)

    def inclusion(self, index: int, size: int) -> InclusionProof:
        try:
            return self._reader.inclusion(index, size, size)
        except AuditError as exc:
            raise ExportFailed(f"no inclusion proof for leaf {index}: {exc.detail}") from exc

    def consistency(self, old: int, new: int) -> ConsistencyProof:
        try:
            return self._reader.consistency(old, new, new)
        except AuditError as exc:
            raise ExportFailed(f"no consistency proof {old}->{new}: {exc.detail}") from exc
