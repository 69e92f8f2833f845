"""``AuditLog``: the asyncio face of one log (append, read, prove, checkpoint)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._checkpoint import SignedCheckpoint
from ._errors import AuditUnavailable, CorruptStore, RecordNotFound
from ._note import check_name, key_id, vkey_for
from ._proofs import ConsistencyProof, InclusionProof, TreeReader
from ._receipt import Receipt
from ._record import IDENTIFIER, Record
from ._store import LogStore, _bytes, _int
from ._witness import Witness
from ._writer import LogIdentity, LogWriter, Pending, Sealed, seal

__all__ = ["AuditLog"]

_RECORD_ID = re.compile(r"^[0-9a-f]{32}$")


class AuditLog:
    """One append-only proof-of-secrecy log, identified by its signing key and origin.

    ``log_id`` is the hex note key id of (origin, public key); every row carries it, so
    several logs (replicas) can share one database.
    """

    def __init__(self, store: LogStore, writer: LogWriter) -> None:
        self._store = store
        self._writer = writer
        self._reader = TreeReader(store, writer.ident.log_id)
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        signing_key: Ed25519PrivateKey,
        origin: str,
        *,
        checkpoint_every_n: int = 1000,
        checkpoint_every_ms: int = 1000,
        witness: str | Path | None = None,
    ) -> AuditLog:
        """Open (migrating and recovering) the log at ``url``; see ``LogStore.open`` for URLs.
        ``witness``: a file beside the signing key that keeps the last checkpoint signed, which
        the stored tree must extend (``audit._witness``)."""
        try:
            check_name(origin)
        except ValueError as exc:
            raise AuditUnavailable("log origin must be non-empty with no spaces or '+'") from exc
        public = signing_key.public_key()
        ident = LogIdentity(
            key_id(origin, public).hex(), origin, vkey_for(origin, public), signing_key
        )

        def start() -> AuditLog:
            store = LogStore.open(url)
            try:
                writer = LogWriter(store, ident, checkpoint_every_n, checkpoint_every_ms,
                                   Witness(witness) if witness is not None else None)
                writer.recover()
            except BaseException:
                store.close()
                raise
            writer.start()
            return cls(store, writer)

        return await asyncio.to_thread(start)

    @property
    def log_id(self) -> str:
        return self._writer.ident.log_id

    @property
    def origin(self) -> str:
        return self._writer.ident.origin

    @property
    def vkey(self) -> str:
        """The note verifier key: ``origin+keyid+base64(0x01 || pubkey)``."""
        return self._writer.ident.vkey

    @property
    def accepting(self) -> bool:
        """Whether appends can succeed: the log is open and neither refused (a stored log that
        cannot be continued, or left without its writer, which refuses it too). A store that is
        down for a moment still counts as accepting: each append says so itself."""
        return not (self._closed or self._writer.refused is not None)

    @property
    def store(self) -> LogStore:
        return self._store

    def _submit(self, sealed: Sealed | None = None, control: str | None = None) -> Any:
        if self._closed:
            raise AuditUnavailable("audit log is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._writer.submit(Pending(future, loop, sealed, control))
        return future

    async def append(self, record: Record) -> Receipt:
        """Sign and store ``record``; returns once it is committed (durable).

        Raises ``AuditUnavailable`` when the store cannot commit it: do not forward then.
        """
        if self._closed:
            raise AuditUnavailable("audit log is closed")
        sealed = seal(record, self._writer.ident)
        receipt: Receipt | None = self._writer.try_inline(sealed)
        if receipt is None:
            receipt = await self._submit(sealed=sealed)
        return receipt

    async def publish(self) -> SignedCheckpoint:
        """Publish a checkpoint over every committed record now and return it."""
        checkpoint: SignedCheckpoint = await self._submit(control="publish")
        return checkpoint

    async def checkpoint(self, log_id: str | None = None) -> SignedCheckpoint:
        """The latest published checkpoint of this log, or of another log in the same store
        (replicas sharing one database each keep their own log)."""
        if log_id is None or log_id == self.log_id:
            latest = self._writer.latest
            if latest is None:
                raise AuditUnavailable("no checkpoint has been published")
            return latest
        return await asyncio.to_thread(self._other_checkpoint, log_id)

    def _other_checkpoint(self, log_id: str) -> SignedCheckpoint:
        vkeys = {lid: vkey for lid, _, vkey, _ in self._store.logs()}
        stored = self._store.latest_checkpoint(log_id) if log_id in vkeys else None
        if stored is None:
            raise RecordNotFound("no such log")
        return SignedCheckpoint.parse(stored[2], vkeys[log_id])

    async def logs(self) -> list[dict[str, str]]:
        """Every log in the store: id, origin and note verifier key."""
        rows = await asyncio.to_thread(self._store.logs)
        return [{"log_id": lid, "origin": origin, "vkey": vkey} for lid, origin, vkey, _ in rows]

    def _tree(self, log_id: str | None) -> TreeReader:
        if log_id is None or log_id == self.log_id:
            return self._reader
        return TreeReader(self._store, log_id)

    async def get_record(self, record_id: str, tenant: str | None = None) -> bytes:
        """The stored DSSE envelope; with ``tenant``, only that tenant pseudonym's records."""
        if not _RECORD_ID.fullmatch(record_id):
            raise RecordNotFound("no such record")
        row = await asyncio.to_thread(self._store.get_record, record_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise RecordNotFound("no such record")
        return _bytes(row.envelope, "audit_records.envelope")

    async def request_records(self, tenant: str, request_id: str) -> list[dict[str, Any]]:
        """The receipts and envelopes of one request's records (tenant-scoped)."""
        if not IDENTIFIER.fullmatch(request_id):  # no record holds it; and the driver may refuse it
            return []
        rows = await asyncio.to_thread(self._store.records_for_request, tenant, request_id)
        return [{"record_id": r.record_id, "kind": r.kind, "log": r.log_id,
                 "leaf": _int(r.leaf_index, "audit_records.leaf_index"),
                 "envelope": _text(r.envelope)} for r in rows]

    async def inclusion_proof(self, index: int, size: int | None = None,
                              log_id: str | None = None) -> InclusionProof:
        """RFC 9162 §2.1.3 proof for leaf ``index`` in the tree of ``size`` (default: latest)."""
        latest = await self.checkpoint(log_id)
        tree = latest.size if size is None else size
        return await asyncio.to_thread(self._tree(log_id).inclusion, index, tree, latest.size)

    async def consistency_proof(self, old: int, new: int | None = None,
                                log_id: str | None = None) -> ConsistencyProof:
        """RFC 9162 §2.1.4 proof between tree sizes ``old`` and ``new`` (default: latest)."""
        latest = await self.checkpoint(log_id)
        tree = latest.size if new is None else new
        return await asyncio.to_thread(self._tree(log_id).consistency, old, tree, latest.size)

    async def close(self) -> None:
        """Flush: publish a final checkpoint of every committed record, release the store."""
        if self._closed:
            return
        stop = self._submit(control="stop")
        self._closed = True
        try:
            await stop
        finally:
            await asyncio.to_thread(self._writer.join)
            await asyncio.to_thread(self._store.close)


def _text(envelope: Any) -> str:
    """A stored envelope as text: binary holding UTF-8, or the store is corrupt."""
    try:
        return _bytes(envelope, "audit_records.envelope").decode()
    except UnicodeDecodeError:
        raise CorruptStore("audit_records.envelope holds bytes that are not UTF-8") from None
