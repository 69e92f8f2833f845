"""The single writer of one log: group commit of records, then Merkle integration off the hot path.

Records are signed by the appending coroutine (CPU only; that overlaps with the writer's fsync,
during which the GIL is released), queued, and committed by this thread in batches, one
transaction per batch; futures resolve only after the commit. Leaves are integrated (interior nodes,
integrated size and a signed checkpoint, in one transaction) every N leaves or T milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._checkpoint import SignedCheckpoint
from ._dsse import seal_envelope
from ._errors import AuditError, AuditUnavailable, InvalidRecord
from ._merkle import CompactRange, leaf_hash, node_id, perfect_subtrees
from ._receipt import Receipt
from ._record import Record
from ._store import LogStore

__all__ = ["LogIdentity", "LogWriter", "Pending", "Sealed", "seal"]

MAX_BATCH = 2048
RECOVERY_CHUNK = 10_000  # records per transaction when catching up
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


@dataclass(frozen=True)
class LogIdentity:
    log_id: str
    origin: str
    vkey: str
    key: Ed25519PrivateKey


@dataclass(frozen=True)
class Sealed:
    """A signed record ready to store; only its leaf index is assigned by the writer."""

    row: dict[str, Any]
    leaf: bytes
    record_id: str
    signature: str
    log_id: str

    def receipt(self, index: int) -> Receipt:
        return Receipt(self.record_id, index, self.signature, self.log_id)


def seal(record: Record, ident: LogIdentity) -> Sealed:
    """Sign a record into its DSSE envelope and its table row (CPU only, no I/O)."""
    try:
        envelope, sig = seal_envelope(record.canonical(), ident.key, ident.log_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRecord("record cannot be encoded") from exc
    record_id = os.urandom(16).hex()
    f = record.fields
    row = {
        "log_id": ident.log_id, "record_id": record_id, "envelope": envelope,
        "kind": f["kind"], "tenant": f["tenant"], "request_id": f["request_id"],
        "time_us": _time_us(f["time"]), "decision": f["decision"], "channel": f["channel"],
        "endpoint": f["endpoint"], "model": f.get("model"), "status": f.get("status"),
    }  # fmt: skip
    signature = base64.b64encode(sig).decode()
    return Sealed(row, leaf_hash(envelope), record_id, signature, ident.log_id)


@dataclass
class Pending:
    """A queued append (``sealed`` set) or a control message (``stop``/``publish``)."""

    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    sealed: Sealed | None = None
    control: str | None = None


def _time_us(value: str) -> int:
    return (datetime.fromisoformat(value.replace("Z", "+00:00")) - _EPOCH) // _ONE_US


_ONE_US = datetime.fromisoformat("1970-01-01T00:00:00.000001+00:00") - _EPOCH


def _settle(items: list[tuple[Pending, Any]]) -> None:
    for pending, outcome in items:
        if pending.future.done():
            continue
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)


def _resolve(items: list[tuple[Pending, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Pending, Any]]] = {}
    for item in items:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, group)
        except RuntimeError:  # the caller's loop is gone; nobody is waiting any more
            continue


class LogWriter:
    """Owns the append sequence, the compact range and checkpoint publication of one log."""

    def __init__(self, store: LogStore, ident: LogIdentity, every_n: int, every_ms: int) -> None:
        self.store, self.ident = store, ident
        self.every_n, self.every_s = max(1, every_n), max(1, every_ms) / 1000
        self.queue: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self.range = CompactRange()
        self.pending: list[bytes] = []
        self.reload = False
        self.next_index = 0
        self.last_publish = time.monotonic()
        self.latest: SignedCheckpoint | None = None
        self.thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)

    # -- recovery ------------------------------------------------------------------------------
    def recover(self) -> None:
        """Load the tree state, integrate every committed but unintegrated record, publish."""
        ident = self.ident
        size = self.store.register_log(ident.log_id, ident.origin, ident.vkey)
        ids = [node_id(lv, i) for lv, i in perfect_subtrees(0, size)]
        nodes = self.store.get_nodes(ident.log_id, ids)
        if len(nodes) != len(ids):
            raise AuditUnavailable("stored tree is missing nodes")
        self.range = CompactRange(size, [nodes[n] for n in ids])
        self.next_index = self.store.next_index(ident.log_id)
        self._catch_up()
        latest = self.store.latest_checkpoint(ident.log_id)
        if latest is None or latest[0] != self.range.size:
            self._publish([], self.range, 0)
        else:
            self.latest = SignedCheckpoint.parse(latest[2], ident.vkey, ident.origin)

    # -- integration ---------------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Integrate every committed record from the database, which is the truth after a
        failure or a crash; each chunk is one transaction with its own checkpoint."""
        self.pending.clear()
        self.reload = True
        while True:
            rows = self.store.records_from(self.ident.log_id, self.range.size, RECOVERY_CHUNK)
            for offset, (index, _) in enumerate(rows):
                if index != self.range.size + offset:
                    raise AuditUnavailable("stored record indices have a gap")
            if rows:
                self._integrate_leaves([leaf_hash(envelope) for _, envelope in rows], 0)
            if len(rows) < RECOVERY_CHUNK:
                break
        self.reload = False
        self.next_index = max(self.next_index, self.range.size)

    def _integrate(self) -> None:
        if self.reload:
            self._catch_up()
        else:
            self._integrate_leaves(self.pending, len(self.pending))

    def _integrate_leaves(self, leaves: list[bytes], consumed: int) -> None:
        rng = CompactRange(self.range.size, self.range.hashes)
        nodes: list[tuple[int, bytes]] = []
        for leaf in leaves:
            nodes.extend(rng.append(leaf))
        self._publish(nodes, rng, consumed)

    def _publish(self, nodes: list[tuple[int, bytes]], rng: CompactRange, consumed: int) -> None:
        ident = self.ident
        cp = SignedCheckpoint.sign(ident.origin, rng.size, rng.root(), ident.key)
        self.store.integrate(ident.log_id, nodes, rng.size, (cp.root_hash, cp.note, _now_us()))
        self.range, self.latest = rng, cp
        del self.pending[:consumed]
        self.last_publish = time.monotonic()

    def _maybe_integrate(self, force: bool) -> None:
        if not (self.pending or self.reload):
            return
        due = time.monotonic() - self.last_publish >= self.every_s
        if force or due or len(self.pending) >= self.every_n:
            try:
                self._integrate()
            except AuditError:
                # Records stay durable; retry from the database after one more period.
                self.reload = True
                self.last_publish = time.monotonic()

    # -- group commit ------------------------------------------------------------------------
    def _write(self, items: list[Pending]) -> None:
        rows = []
        for offset, pending in enumerate(items):
            assert pending.sealed is not None
            pending.sealed.row["leaf_index"] = self.next_index + offset
            rows.append(pending.sealed.row)
        try:
            self.store.insert_records(rows)
        except AuditUnavailable as exc:
            _resolve([(p, exc) for p in items])
            self._resync()
            return
        done = [(p, p.sealed.receipt(self.next_index + i)) for i, p in enumerate(items) if p.sealed]
        self.next_index += len(rows)
        if not self.reload:
            self.pending.extend(p.sealed.leaf for p in items if p.sealed)
        _resolve(done)

    def _resync(self) -> None:
        """After a failed commit the database is the truth (a commit may have landed)."""
        self.reload = True
        try:
            self.next_index = self.store.next_index(self.ident.log_id)
        except AuditUnavailable:
            return

    # -- thread loop ---------------------------------------------------------------------------
    def _take(self) -> Pending | None:
        timeout = None
        if self.pending or self.reload:
            timeout = max(0.0, self.last_publish + self.every_s - time.monotonic())
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _drain(self, first: Pending) -> tuple[list[Pending], Pending | None]:
        if first.control:
            return [], first
        items = [first]
        while len(items) < MAX_BATCH:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item.control:
                return items, item
            items.append(item)
        return items, None

    def _run(self) -> None:
        while True:
            first = self._take()
            if first is None:
                self._maybe_integrate(force=True)
                continue
            items, control = self._drain(first)
            if items:
                self._write(items)
            self._maybe_integrate(force=False)
            if control is not None and self._control(control):
                return

    def _control(self, control: Pending) -> bool:
        outcome: Any
        try:
            if self.pending or self.reload:
                self._integrate()
            outcome = self.latest
        except AuditError as exc:
            outcome = exc
        _resolve([(control, outcome)])
        return control.control == "stop"

    def submit(self, pending: Pending) -> None:
        self.queue.put(pending)


def _now_us() -> int:
    return time.time_ns() // 1000

