"""The single writer of one log: records and their Merkle nodes committed together.

Records are signed by the appending coroutine (CPU only), then committed with the tree nodes they
complete and the new integrated size, in one transaction, so the tree never lags the records and
no integration batch ever runs beside the request path. Checkpoints (signed notes over the
integrated tree) are published by the writer thread every N leaves or T milliseconds.

Two ways to commit, one lock: when a commit is local and cheap (SQLite without fsync,
``LogStore.commits_are_local``), no queued append is waiting and appends are sparse (none ended in
the last ``INLINE_GAP_S``), the appending thread commits its one record itself (``try_inline``): two thread
handoffs cost more than the commit. Otherwise appends are queued and this thread commits them in
batches (group commit, one transaction per batch, futures resolved after the commit). Leaf
indices are assigned under the lock, in commit order.
"""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._checkpoint import SignedCheckpoint
from ._dsse import seal_envelope
from ._errors import AuditBusy, AuditError, AuditUnavailable, InvalidRecord, VerificationError
from ._merkle import NODE_ID_SHIFT, CompactRange, leaf_hash, node_id, perfect_subtrees
from ._note import NoteVerifier
from ._receipt import Receipt
from ._record import Record
from ._rows import checked_row, names_log, time_us
from ._store import LogStore
from ._witness import Witness

__all__ = ["LogIdentity", "LogWriter", "Pending", "Sealed", "seal"]

MAX_BATCH = 2048
INLINE_GAP_S = 0.00025  # an append this soon after the last one is batched, not committed inline
RECOVERY_CHUNK = 10_000  # records per transaction when catching up
WAL_RESET_BYTES = 32 << 20  # a SQLite WAL past this is checkpointed with no commit beside it
_log = structlog.get_logger("sealgate.audit")


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
        envelope, sig = seal_envelope(record.in_log(ident.log_id).canonical(), ident.key, ident.log_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRecord("record cannot be encoded") from exc
    record_id = os.urandom(16).hex()
    f = record.fields
    row = {
        "log_id": ident.log_id, "record_id": record_id, "envelope": envelope,
        "kind": f["kind"], "tenant": f["tenant"], "request_id": f["request_id"],
        "time_us": time_us(f["time"]), "decision": f["decision"], "channel": f["channel"],
        "endpoint": f["endpoint"], "model": f.get("model"), "status": f.get("status"),
    }  # fmt: skip
    signature = base64.b64encode(sig).decode()
    return Sealed(row, leaf_hash(envelope), record_id, signature, ident.log_id)


@dataclass
class Pending:
    """A queued append (``sealed`` set) or a control message (``stop``/``publish``, or
    ``due`` (publish if due), which nobody awaits)."""

    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None
    sealed: Sealed | None = None
    control: str | None = None


def _extended(rng: CompactRange, leaves: list[bytes]) -> tuple[CompactRange, list[tuple[int, bytes]]]:
    """``rng`` with ``leaves`` appended, and the nodes they complete (nothing is stored)."""
    grown = CompactRange(rng.size, rng.hashes)
    nodes: list[tuple[int, bytes]] = []
    for leaf in leaves:
        nodes.extend(grown.append(leaf))
    return grown, nodes


def _node_end(n: int) -> int:
    """One past the last leaf under node ``n``: it is stored once the tree reaches that size."""
    level, index = divmod(n, NODE_ID_SHIFT)
    return (index + 1) << level


def _settle(items: list[tuple[Pending, Any]]) -> None:
    for pending, outcome in items:
        if pending.future is None or pending.future.done():
            continue
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)


def _resolve(items: list[tuple[Pending, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Pending, Any]]] = {}
    for item in items:
        if item[0].loop is not None:
            by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, group)
        except RuntimeError:  # the caller's loop is gone; nobody is waiting any more
            continue


class LogWriter:
    """Owns the append sequence, the compact range and checkpoint publication of one log."""

    def __init__(self, store: LogStore, ident: LogIdentity, every_n: int, every_ms: int,
                 witness: Witness | None = None) -> None:
        self.store, self.ident, self.witness = store, ident, witness
        self.every_n, self.every_s = max(1, every_n), max(1, every_ms) / 1000
        self.queue: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self.range = CompactRange()
        self.reload = False
        self.refused: str | None = None  # why the stored log cannot be continued (fail closed)
        self.next_index = 0
        self.last_publish = time.monotonic()
        self.latest: SignedCheckpoint | None = None
        self.inline = store.commits_are_local
        self.last_append = 0.0  # when the last try_inline returned (monotonic seconds)
        # Queued appends: counted by the submitting thread and by this one after each commit
        # (each counter has one writer); equal counts mean none is waiting.
        self.submitted = self.committed = 0
        self.lock = threading.Lock()  # guards the store writes, next_index, range and latest
        self.thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        # SQLite WAL checkpoints copy and fsync; a thread of their own keeps appends moving.
        self.wal_wanted = threading.Event()
        self.stopping = False
        self.dead = False  # the writer thread ended on an unexpected error: nothing is written
        self.held: list[Pending] = []  # taken off the queue by the writer thread, not yet answered
        self.submit_lock = threading.Lock()  # orders submissions with the end of the thread
        self.publish_failing = False
        self.wal_thread = (threading.Thread(target=self._wal_loop, name="audit-wal", daemon=True)
                           if store.is_sqlite else None)

    def start(self) -> None:
        self.thread.start()
        if self.wal_thread is not None:
            self.wal_thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.wal_thread is not None and self.wal_thread.is_alive():
            self.wal_thread.join()

    # -- recovery ------------------------------------------------------------------------------
    def recover(self) -> None:
        """Load the tree state, integrate every committed but unintegrated record, check that
        it extends the last checkpoint signed (the witness kept outside the store), publish."""
        last = self._catch_up()
        self._check_witness(last)
        if last is None or last.size != self.range.size:
            self._publish()
        else:
            self.latest = last

    def _catch_up(self) -> SignedCheckpoint | None:
        """Reload the tree and the next index from the database, which is the truth after a
        failure or a crash, and integrate every committed record the tree does not hold yet;
        each chunk is one transaction. Returns the last checkpoint signed.

        Only what that checkpoint's signed root covers is taken from the stored tree nodes.
        The tree past it is recomputed from the records, each checked against its signature
        (its columns restating it, no request with two records of one kind), and the nodes
        already stored there must match: a checkpoint signed next covers only records this key
        signed, however the tables were edited (docs/threat-model.md)."""
        if self.refused is not None:
            raise AuditUnavailable(self.refused)
        self.reload = True
        ident = self.ident
        integrated = self.store.register_log(ident.log_id, ident.origin, ident.vkey)
        last = self._last_signed()
        base = 0 if last is None else last.size
        if integrated < base:
            self._refuse(integrated, "tree_smaller_than_checkpoint")
        ids = [node_id(lv, i) for lv, i in perfect_subtrees(0, base)]
        stored = self.store.get_nodes(ident.log_id, ids)
        if len(stored) != len(ids):
            raise AuditUnavailable("stored tree is missing nodes")
        rng = CompactRange(base, [stored[n] for n in ids])
        if last is not None and base and rng.root() != last.root_hash:
            self._refuse(integrated, "tree_not_an_extension")
        self.next_index = self.store.next_index(ident.log_id)
        verifier = NoteVerifier.parse(ident.vkey)
        legacy = self._legacy(base)
        while True:
            rows = self.store.record_rows(ident.log_id, rng.size, RECOVERY_CHUNK)
            leaves = []
            try:
                for i, row in enumerate(rows):
                    leaf, named = checked_row(row, rng.size + i, verifier, ident.log_id,
                                              legacy=legacy)
                    legacy = legacy and not named
                    leaves.append(leaf)
            except VerificationError:
                self._refuse(integrated, "record_unverifiable")
            # A request has one record of each kind: another is a copy of a signed record.
            if rows and self.store.repeated_record(ident.log_id, rng.size, rng.size + len(rows)):
                self._refuse(integrated, "record_repeated")
            grown, nodes = _extended(rng, leaves)
            self._check_stored(nodes, integrated)
            if grown.size > integrated:
                fresh = [(n, h) for n, h in nodes if _node_end(n) > integrated]
                self.store.integrate(ident.log_id, fresh, grown.size, None)
            rng = grown
            if len(rows) < RECOVERY_CHUNK:
                break
        if rng.size < integrated:
            self._refuse(integrated, "tree_not_the_records")
        self.range = rng
        if last is not None and (self.latest is None or last.size > self.latest.size):
            # Signed by this key and extended by the tree: published, even if the commit that
            # stored it was reported failed (lost acknowledgement). Signing that size again
            # would only be refused by the checkpoints' primary key.
            self.latest = last
        self.reload = False
        self.next_index = max(self.next_index, self.range.size)
        return last

    def _check_witness(self, last: SignedCheckpoint | None) -> None:
        """The stored tree must extend the last checkpoint this key signed as the witness
        recorded it: a store removed, emptied or replaced by an older copy must not start the
        log over under the same key (fail closed: a new log takes a new key)."""
        if self.witness is None:
            return
        log_id = self.ident.log_id
        try:
            kept = self.witness.last_signed(log_id)
        except AuditUnavailable:
            self._refuse(self.range.size, "checkpoint_witness_unreadable")
        if kept is None:
            return
        size, root = kept
        signed = last.size if last is not None else 0
        if signed < size:
            self._refuse(signed, "store_behind_witness")
        if last is not None and signed == size:
            at_size = last.root_hash
        else:
            ids = [node_id(lv, i) for lv, i in perfect_subtrees(0, size)]
            stored = self.store.get_nodes(log_id, ids)
            if len(stored) != len(ids):
                self._refuse(signed, "store_not_the_witness")
            at_size = CompactRange(size, [stored[n] for n in ids]).root()
        if at_size != root:
            self._refuse(signed, "store_not_the_witness")

    def _legacy(self, signed: int) -> bool:
        """Whether records that name no log may still be integrated: only in a log whose last
        signed leaf names none, written before records named their log (its records from then
        on, committed before an upgrade but never signed into a checkpoint, are integrated as
        any others). A new log, or one past its first record that names it, takes none."""
        if signed == 0:
            return False
        rows = self.store.record_rows(self.ident.log_id, signed - 1, 1)
        try:
            return bool(rows) and not names_log(bytes(rows[0].envelope))
        except (VerificationError, TypeError):
            return False  # no readable record there: the checks that follow say what it is

    def _last_signed(self) -> SignedCheckpoint | None:
        """The last checkpoint this key signed: the stored latest, or this process's own if
        newer (a smaller stored one means checkpoint rows were removed)."""
        ident, last = self.ident, self.latest
        try:
            stored = self.store.latest_checkpoint(ident.log_id)
            if stored is not None and (last is None or stored[0] > last.size):
                last = SignedCheckpoint.parse(stored[2], ident.vkey, ident.origin)
        except VerificationError:
            self._refuse(self.range.size, "checkpoint_unverifiable")
        return last

    def _check_stored(self, nodes: list[tuple[int, bytes]], integrated: int) -> None:
        """Nodes recomputed from the records against those stored for the integrated tree."""
        kept = [(n, h) for n, h in nodes if _node_end(n) <= integrated]
        stored = self.store.get_nodes(self.ident.log_id, [n for n, _ in kept])
        if any(stored.get(n) != h for n, h in kept):
            self._refuse(integrated, "tree_not_the_records")

    def _refuse(self, size: int, reason: str) -> NoReturn:
        """Sign nothing more over this stored log (fail closed)."""
        _log.error("audit_log_refused", log_id=self.ident.log_id, size=size, reason=reason)
        self.refused = (f"the stored log (size {size}) does not extend the last signed "
                        f"checkpoint ({reason}); refusing to continue it")
        raise AuditUnavailable(self.refused)

    # -- commits ---------------------------------------------------------------------------------
    def _commit(self, sealed: list[Sealed], inline: bool = False) -> int:
        """Store ``sealed`` at the next indices, with their tree nodes unless the tree must first
        catch up from the database; returns the first index (caller holds the lock).
        ``inline``: on the event loop's thread, which never waits for a lock (``AuditBusy``)."""
        first = self.next_index
        rows = []
        for offset, item in enumerate(sealed):
            item.row["leaf_index"] = first + offset
            rows.append(item.row)
        try:
            self._check_file()
            if self.reload or self.range.size != first:
                if self.refused is not None:  # the stored log cannot be continued: fail closed
                    raise AuditUnavailable(self.refused)
                self.store.insert_records(rows, inline=inline)
            else:
                rng, nodes = _extended(self.range, [item.leaf for item in sealed])
                self.store.insert_records(rows, nodes=nodes, size=rng.size, inline=inline)
                self.range = rng
        except AuditBusy:
            raise  # nothing was written
        except AuditUnavailable:
            self._resync()
            raise
        self.next_index = first + len(sealed)
        return first

    def _check_file(self) -> None:
        """Refuse to go on when the store's file was removed or replaced (fail closed): the
        records would go to a file nobody can read, and the log would be lost."""
        try:
            self.store.check_file()
        except AuditUnavailable as exc:
            if self.refused is None:
                _log.error("audit_log_refused", log_id=self.ident.log_id, size=self.range.size,
                           reason="database_file_replaced")
                self.refused = f"{exc.detail}; refusing to continue the log"
            raise AuditUnavailable(self.refused) from exc

    def _publish(self) -> None:
        """Sign and store a checkpoint of the integrated tree (caller holds the lock)."""
        ident, rng = self.ident, self.range
        cp = SignedCheckpoint.sign(ident.origin, rng.size, rng.root(), ident.key)
        self.store.integrate(ident.log_id, [], rng.size, (cp.root_hash, cp.note, _now_us()))
        self.latest = cp
        self.last_publish = time.monotonic()
        if self.witness is not None:
            self.witness.signed(ident.log_id, cp.size, cp.root_hash)

    def _unpublished(self) -> int:
        return self.range.size - (self.latest.size if self.latest is not None else 0)

    def _maybe_publish(self, force: bool) -> None:
        """Catch up if needed, and publish a checkpoint when one is due."""
        with self.lock:
            if not (self.reload or self._unpublished()):
                return
            due = time.monotonic() - self.last_publish >= self.every_s
            if not (force or due or self.reload or self._unpublished() >= self.every_n):
                return
            try:
                self._check_file()
                if self.reload:
                    self._catch_up()
                if self._unpublished() or self.latest is None:
                    self._publish()
                else:
                    self.last_publish = time.monotonic()
            except AuditError as exc:
                # Records stay durable; retry from the database, on fresh connections, after
                # one more period. Said once per outage, and when it ends.
                self.reload = True
                self.last_publish = time.monotonic()
                if self.refused is None:
                    self.store.reset_connections()
                if not self.publish_failing:
                    self.publish_failing = True
                    _log.error("checkpoint_not_published", log_id=self.ident.log_id,
                               error_type=type(exc.__cause__ or exc).__name__)
                # A full disk fails publication too: copying the WAL back into the database
                # file, and starting it afresh, is what frees the space.
                self._checkpoint_wal()
                return
            if self.publish_failing:
                self.publish_failing = False
                _log.warning("checkpoint_published_again", log_id=self.ident.log_id,
                             size=self.range.size)
        self._checkpoint_wal()

    def _checkpoint_wal(self) -> None:
        """Ask the WAL thread for a checkpoint (SQLite; nothing to do elsewhere)."""
        if self.wal_thread is not None:
            self.wal_wanted.set()

    def _wal_loop(self) -> None:
        while True:
            self.wal_wanted.wait()
            self.wal_wanted.clear()
            try:
                if self.refused is None:
                    self.store.checkpoint_wal()
                    if self.store.wal_bytes() > WAL_RESET_BYTES:
                        self._settle_wal()
            except AuditError:
                pass  # the next publication tries again; the WAL keeps every commit meanwhile
            if self.stopping:
                return

    def _settle_wal(self) -> None:
        """A checkpoint that no commit runs beside. SQLite starts the WAL afresh (and cuts the
        file to its size limit) only once a checkpoint has copied every frame in it, and a
        passive one beside a steady stream of commits never catches the last one: the WAL, and
        the disk it fills, grew without end. Holding the writer's lock, this pass copies what
        the one before it left (little: that one ran just now), and the next commit starts the
        WAL from its beginning. Inline commits do not wait for the lock; they queue."""
        with self.lock:
            self.store.checkpoint_wal()

    def _write(self, items: list[Pending]) -> None:
        """Group commit of queued appends (caller holds the lock)."""
        sealed = [p.sealed for p in items if p.sealed is not None]
        try:
            first = self._commit(sealed)
        except AuditUnavailable as exc:
            _resolve([(p, exc) for p in items])
            return
        finally:
            self.committed += len(sealed)
        _resolve([(p, s.receipt(first + i)) for i, (p, s) in enumerate(zip(items, sealed, strict=True))])

    def try_inline(self, sealed: Sealed) -> Receipt | None:
        """Commit ``sealed`` on the calling thread if the writer is idle; ``None``: queue it.

        Raises ``AuditUnavailable`` when the commit fails (nothing was acknowledged)."""
        sparse = time.monotonic() - self.last_append >= INLINE_GAP_S
        idle = self.submitted == self.committed  # no queued append waits for its commit
        if not (self.inline and sparse and idle) or not self.lock.acquire(blocking=False):
            self.last_append = time.monotonic()
            return None
        try:
            index = self._commit([sealed], inline=True)
            if self._unpublished() == self.every_n:  # wake the writer to publish
                self.queue.put(Pending(None, None, control="due"))
            return sealed.receipt(index)
        except AuditBusy:
            return None  # another process holds the lock: the writer thread waits for it
        finally:
            self.lock.release()
            self.last_append = time.monotonic()

    def _resync(self) -> None:
        """After a failed commit the database is the truth (a commit may have landed), read
        on fresh connections."""
        self.reload = True
        if self.refused is not None:
            return  # nothing more is written to this store
        self.store.reset_connections()
        try:
            self.next_index = self.store.next_index(self.ident.log_id)
        except AuditError:
            return

    # -- thread loop ---------------------------------------------------------------------------
    def _take(self) -> Pending | None:
        # Inline commits add leaves without waking this thread, so an idle writer still looks
        # for a checkpoint to publish once per period.
        timeout = self.every_s
        if self._unpublished() or self.reload:
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
        try:
            self._loop()
        except BaseException as exc:  # a bug or a store answering nonsense: fail closed
            _log.error("audit_writer_failed", log_id=self.ident.log_id,
                       error_type=type(exc).__name__)
            self._end(f"the audit log writer stopped ({type(exc).__name__})")

    def _end(self, reason: str) -> None:
        """After the thread's unexpected end: refuse every append, fail what waits and what is
        submitted from now on, and let the WAL thread end too."""
        self.refused = self.refused or reason
        self.reload = True
        with self.submit_lock:
            self.dead = True
        waiting, self.held = self.held, []
        while True:
            try:
                waiting.append(self.queue.get_nowait())
            except queue.Empty:
                break
        _resolve([(p, AuditUnavailable(self.refused)) for p in waiting])
        self.stopping = True
        self.wal_wanted.set()

    def _loop(self) -> None:
        while True:
            first = self._take()
            if first is None:
                self._maybe_publish(force=True)
                continue
            items, control = self._drain(first)
            self.held = items + ([control] if control is not None else [])
            if items:
                with self.lock:
                    self._write(items)
            self._maybe_publish(force=False)
            if control is not None and self._control(control):
                return
            self.held = []

    def _control(self, control: Pending) -> bool:
        if control.control == "due":
            self._maybe_publish(force=True)
            return False
        outcome: Any
        try:
            with self.lock:
                if self.reload:
                    self._catch_up()
                if self._unpublished() or self.latest is None:
                    self._publish()
                outcome = self.latest
        except AuditError as exc:
            outcome = exc
        stop = control.control == "stop"
        self.stopping = stop
        self._checkpoint_wal()  # after a stop, the WAL thread's last checkpoint
        _resolve([(control, outcome)])
        return stop

    def submit(self, pending: Pending) -> None:
        with self.submit_lock:
            if not self.dead:
                if pending.sealed is not None:
                    self.submitted += 1
                self.queue.put(pending)
                return
        _resolve([(pending, AuditUnavailable(self.refused or "the audit log writer stopped"))])


def _now_us() -> int:
    return time.time_ns() // 1000

