"""Build an evidence bundle (a zip) for a time window from the audit store and data directory.

Layout: ``manifest.json`` + ``manifest.sig``, ``report.html``, ``log.json``,
``identity/<sha256>.json``, ``policies/index.json`` + ``policies/<digest hex>/<file>``,
``checkpoints/<size>.note`` + ``checkpoints/consistency.json``, ``records/records.jsonl``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import random
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditError, LogStore, RowChecker, SignedCheckpoint, VerificationError
from policy import PolicyBundle, contract_owner
from proxy.attestation import Evidence
from proxy.attestation import VerificationError as AttestationError

from ._archive import ATTRIBUTES, MADE_BY, MAX_DIRECTORY, MAX_ENTRIES
from ._errors import ExportFailed
from ._manifest import parse_vkey, raw_public, sign_manifest
from ._records import (
    checkpoint_times,
    rows_at,
    rows_from,
    scan_start,
    statement,
    window_bounds,
)
from ._report import render_report
from ._state import (
    document_bytes,
    identity_documents,
    persist_identity,
    policy_snapshots,
    snapshot_policy,
)
from ._tree import ProofSource

__all__ = ["FORMAT", "ExportOptions", "build_bundle", "instant_us", "iso", "to_us", "write_bundle"]

FORMAT = "sealgate-evidence/v1"
MAX_CHECKPOINTS = 64
Progress = Callable[[str, int, int], None]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(when: datetime) -> int:
    """Microseconds since the epoch, exactly (no float on the way)."""
    return (when.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def iso(time_us: int) -> str:
    """RFC 3339 UTC with microseconds; the year always has four digits (``%Y`` leaves years
    before 1000 short, which no parser reads back)."""
    when = _EPOCH + timedelta(microseconds=time_us)
    return f"{when.year:04d}-" + when.strftime("%m-%dT%H:%M:%S.%fZ")


def instant_us(text: object) -> int | None:
    """An RFC 3339 UTC time (``Z``, any number of fractional digits) as microseconds since the
    epoch; ``None`` when it is not one. Times compare as numbers, never as strings: ``12:00:00Z``
    sorts after ``12:00:00.1Z`` as text."""
    if not isinstance(text, str) or not text.endswith("Z") or not text.isascii():
        return None
    try:
        return to_us(datetime.fromisoformat(text[:-1] + "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class ExportOptions:
    """What to export."""

    start: datetime
    """Window start (inclusive, timezone-aware)."""
    end: datetime
    """Window end (exclusive, timezone-aware)."""
    tenant: str | None = None
    """Only this tenant pseudonym's records."""
    sample: int | None = None
    """Export a uniform random sample of this many records instead of all."""
    server_document: Mapping[str, Any] | None = None
    """The identity document the running server publishes now (``--server``)."""
    policy_bundle: str | PolicyBundle = ""
    """The server's policy bundle: the one its engine enforces, or its directory (empty: the
    shipped one)."""
    origin: str | None = None
    """The gateway's ``log_origin``: which log to export when the key signs several."""
    tenant_name: str | None = None
    """The name of ``tenant`` (the pseudonym's): its bundle withholds the contract files of
    every other tenant (``policy.contract_owner``), keeping their paths and hashes."""


def _select_log(store: LogStore, key: Ed25519PrivateKey,
                origin: str | None) -> tuple[str, str, str]:
    """The log this key signs (of ``origin``, when given). A key that signs several logs (the
    log origin was changed, the data directory kept) needs the origin: exporting whichever came
    first would leave out the other log's records while calling the bundle complete."""
    mine = raw_public(key.public_key())
    found = []
    for log_id, log_origin, vkey, _size in store.logs():
        try:
            signs = raw_public(parse_vkey(vkey)) == mine
        except (ValueError, TypeError, AttributeError):
            continue  # a malformed key row names no log of this key
        if signs:
            found.append((log_id, log_origin, vkey))
    if not found:
        raise ExportFailed("the audit store has no log signed by this data directory's key")
    named = [log for log in found if log[1] == origin] if len(found) > 1 else found
    if len(named) != 1:
        origins = ", ".join(sorted(o for _, o, _ in found))
        raise ExportFailed(f"this data directory's key signs several logs ({origins}); set "
                           "log_origin to the one to export")
    return named[0]


@dataclass
class _Window:
    """What the scan learnt of the window: the leaves to export (not their rows: a window can
    hold more records than memory), and what the report says of them."""

    leaves: list[int]
    total: int
    pending: int
    decisions: Counter[str]
    policies: dict[str, list[int]]
    """Per policy digest: first leaf, its time, last leaf, its time, and the count."""
    evidence: set[str]

    def note(self, row: Any) -> None:
        """Count a checked row of the window in the report's figures."""
        pred = statement(bytes(row.envelope)).get("predicate", {})
        self.decisions[str(row.decision)] += 1
        index, when = int(row.leaf_index), int(row.time_us)
        seen = self.policies.setdefault(str(pred.get("policy_bundle_digest")),
                                        [index, when, index, when, 0])
        if index < seen[0]:
            seen[0:2] = [index, when]
        if index > seen[2]:
            seen[2:4] = [index, when]
        seen[4] += 1
        self.evidence.add(str(pred.get("evidence_digest")))


# Records are appended in the order of their times, give or take the moments between taking a
# record's time and appending it. Past a window's edges the scan reads on until the records are
# this far outside it, so that a record whose columns were moved out of the window is read, and
# fails its check, instead of being left out unseen.
_EDGE_US = 60_000_000


def _scan(store: LogStore, log_id: str, opts: ExportOptions, checker: RowChecker,
          progress: Progress | None) -> _Window:
    """The window's records, chosen by columns each row is checked to restate. The rows read
    run in one ascending pass from a row whose signed time is well before the window (or leaf
    0) to one past the window's last leaf by its columns whose signed time is well after it
    (``_EDGE_US``), or to the log's end: those under the checkpoint as one :class:`audit.Run`
    (their columns against their records, and all of them against the signed tree), any past
    it against their signatures. The database only says where to start: both ends are judged
    by what was signed."""
    start_us, end_us, covered = to_us(opts.start), to_us(opts.end), checker.checkpoint.size
    first, last = window_bounds(store, log_id, start_us, end_us)
    lo = scan_start(store, log_id, first, start_us - _EDGE_US)
    win = _Window([], 0, 0, Counter(), {}, set())
    run = checker.run(lo) if lo < covered else None
    index = lo
    try:
        for row in rows_from(store, log_id, lo):
            if row.leaf_index != index:  # a missing leaf, or a row out of place
                raise ExportFailed(_unsound(f"leaf {index} is missing"))
            if run is not None and index < covered:
                run.add(row)
            else:
                checker.signed(row, index)
            # Checked: the columns restate the signed record, time_us an int among them.
            if index == lo and lo > 0 and not row.time_us < start_us - _EDGE_US:
                raise ExportFailed(_unsound(f"leaf {lo}, where the scan starts, is not "
                                            "well before the window"))
            if start_us <= row.time_us < end_us and (opts.tenant is None or row.tenant == opts.tenant):
                win.total += 1
                if index >= covered:
                    win.pending += 1
                else:
                    win.leaves.append(index)
                    win.note(row)
            index += 1
            if progress is not None and (index - lo) % 1000 == 0:
                progress("checking records", index - lo, 0)
            if index > last and row.time_us >= end_us + _EDGE_US:
                break
        else:  # the log's end: every leaf of the signed tree must have been there
            if index < covered:
                raise ExportFailed(_unsound(f"leaf {index} is missing"))
        if index <= last:
            raise ExportFailed(_unsound(f"leaf {index} is missing"))
        if run is not None:
            run.close()
    except VerificationError as exc:
        raise ExportFailed(_unsound(exc.detail)) from None
    return win


def _unsound(detail: str) -> str:
    return (f"the audit store does not match what the log signed ({detail}); "
            "run `sealgate audit verify` for the whole log")


class _Zip:
    """The bundle's zip: regular files, deflated, back to back (``out`` is seekable, so no data
    descriptors), no extra fields, no comment, no zip64 records; within the verifier's caps on
    entries and central directory size, or ``ExportFailed``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.zf = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED)
        self.hashes: dict[str, str] = {}
        self.directory = 0  # bytes of central directory so far

    def _info(self, name: str) -> zipfile.ZipInfo:
        """A new entry, counted against the caps."""
        self.directory += 46 + len(name.encode())  # a central directory header and the name
        if len(self.hashes) >= MAX_ENTRIES or self.directory > MAX_DIRECTORY:
            raise ExportFailed(f"the bundle would hold more than {MAX_ENTRIES:,} files or a zip "
                               f"central directory over {MAX_DIRECTORY >> 20} MiB, which "
                               "verifiers refuse; export a shorter window")
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        # What verifiers require, whatever system exports (zipfile says Windows made it there).
        info.create_system, info.external_attr = MADE_BY >> 8, ATTRIBUTES
        return info

    def add(self, name: str, data: bytes) -> None:
        self.zf.writestr(self._info(name), data)
        self.hashes[name] = hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def stream(self, name: str) -> Iterator[Callable[[bytes], None]]:
        """A member written piece by piece (``write(piece)``), hashed as it goes."""
        digest = hashlib.sha256()
        with self.zf.open(self._info(name), "w") as member:
            def write(piece: bytes) -> None:
                member.write(piece)
                digest.update(piece)

            yield write
        self.hashes[name] = digest.hexdigest()


def _checkpoints(store: LogStore, log_id: str, first_leaf: int,
                 latest: tuple[int, bytes, str]) -> list[tuple[int, str]]:
    """An anchor at or before the window, then up to MAX_CHECKPOINTS after it, ``latest``
    last: all of them, or, when there are more, the first at or above each of evenly spaced
    tree sizes. Index seeks only, never a read of every checkpoint: a busy log publishes one a
    second."""
    before = store.checkpoints(log_id, after=0, through=first_leaf, limit=1, newest_first=True)
    after = store.checkpoints(log_id, after=first_leaf, through=latest[0],
                              limit=MAX_CHECKPOINTS + 1)
    if len(after) > MAX_CHECKPOINTS:
        low, high, steps = after[0][0], latest[0], MAX_CHECKPOINTS - 1
        spread = {latest[0]: latest}
        for i in range(steps):  # the first at or above each size: above the size before it
            spread.update((row[0], row) for row in store.checkpoints(
                log_id, after=low + (high - low) * i // steps - 1, limit=1))
        after = sorted(spread.values())
    return [(size, note) for size, _root, note in before + after]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def build_bundle(store: LogStore, data_dir: Path, key: Ed25519PrivateKey, opts: ExportOptions,
                 progress: Progress | None = None) -> bytes:
    """The bundle as zip bytes (``write_bundle`` into memory)."""
    buffer = io.BytesIO()
    write_bundle(store, data_dir, key, opts, buffer, progress)
    return buffer.getvalue()


def write_bundle(store: LogStore, data_dir: Path, key: Ed25519PrivateKey, opts: ExportOptions,
                 out: IO[bytes], progress: Progress | None = None) -> None:
    """Write the bundle, a zip, to ``out`` (seekable); see the module docstring for its layout.
    Records are read from the store twice, once to choose and once to write them, and held a
    chunk at a time, so memory does not grow with the window."""
    if opts.end <= opts.start:
        raise ExportFailed("the window must end after it starts")
    log_id, origin, vkey = _select_log(store, key, opts.origin)
    latest = store.latest_checkpoint(log_id)
    if latest is None or latest[0] == 0:
        raise ExportFailed("the log has no published checkpoint yet")
    try:
        signed = SignedCheckpoint.stored(*latest, vkey, origin)
    except AuditError as exc:
        raise ExportFailed(_unsound(f"latest checkpoint: {exc.detail}")) from None
    checker = RowChecker(store, log_id, vkey, signed)
    latest_size = signed.size
    win = _scan(store, log_id, opts, checker, progress)
    chosen = win.leaves
    if opts.sample is not None and opts.sample < len(chosen):
        chosen = sorted(random.SystemRandom().sample(chosen, opts.sample))
    if opts.server_document is not None:
        persist_identity(data_dir, opts.server_document)
    zipped = _Zip(out)
    _add_records(zipped, checker, rows_at(store, log_id, chosen), len(chosen), progress)
    log = {"log_id": log_id, "origin": origin, "vkey": vkey}
    zipped.add("log.json", _dumps(log))
    identities = _add_identities(zipped, data_dir, win.evidence, opts.server_document,
                                 raw_public(key.public_key()))
    policies = _add_policies(zipped, data_dir, win.policies, opts)
    first_leaf = chosen[0] if chosen else latest_size
    cps = _add_checkpoints(zipped, store, log_id, first_leaf, latest)
    context = {
        "window_from": iso(to_us(opts.start)), "window_to": iso(to_us(opts.end)),
        "tenant": opts.tenant, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "simulated": any(d["platform"] == "simulated" for d in identities), "log": log,
        "latest_size": cps[-1][0], "decisions": dict(sorted(win.decisions.items())),
        "records": {"in_window": win.total, "exported": len(chosen), "pending": win.pending,
                    "sampled": len(chosen) < len(win.leaves),
                    "complete": opts.tenant is None and len(chosen) == win.total,
                    "leaves": chosen},
    }  # fmt: skip
    times = checkpoint_times(store, log_id)
    cp_view = [{"size": s, "time": iso(times.get(s, 0)), "proof": i > 0}
               for i, (s, _n) in enumerate(cps)]
    zipped.add("report.html", render_report(context, identities, policies, cp_view))
    _finish(zipped, context, key)


def _add_identities(out: _Zip, data_dir: Path, wanted: set[str],
                    server: Mapping[str, Any] | None, audit_key: bytes) -> list[dict[str, Any]]:
    """The kept documents the records cite, and the server's; when that is none (a window or
    tenant without records, no ``--server``), the newest kept one that attests the log key:
    without a document that binds it, nothing in the bundle can verify."""
    chosen: list[tuple[str, dict[str, Any], str]] = []
    binding: list[tuple[str, dict[str, Any], str]] = []
    for name, doc in identity_documents(data_dir).items():
        try:
            digest = Evidence.from_json(doc["evidence"]).digest()
        except (AttestationError, KeyError, TypeError):
            continue  # a malformed kept document cannot be attested; it is not exported
        is_server = server is not None and document_bytes(doc) == document_bytes(server)
        if digest in wanted or is_server:
            chosen.append((name, doc, digest))
        elif _attests(doc, audit_key):
            binding.append((name, doc, digest))
    if not chosen and not binding:
        raise ExportFailed("no identity document in the data directory attests the log key; "
                           "export with --server URL to fetch the one the gateway serves")
    rows = []
    for name, doc, digest in chosen or binding[-1:]:  # kept documents are oldest first
        out.add(f"identity/{name}", document_bytes(doc))
        rows.append({"file": name, "created": doc.get("created"), "evidence_digest": digest,
                     "platform": doc.get("platform"), "measurement": doc.get("measurement")})
    return rows


def _attests(doc: Mapping[str, Any], audit_key: bytes) -> bool:
    """Whether a kept document names ``audit_key`` (unverified: the verifier's job)."""
    try:
        return base64.b64decode(doc["audit_public_key"], validate=True) == audit_key
    except (KeyError, TypeError, ValueError):  # binascii.Error is a ValueError
        return False


def _add_policies(out: _Zip, data_dir: Path, seen: dict[str, list[Any]],
                  opts: ExportOptions) -> list[dict[str, Any]]:
    """The kept bundles the records cite, and the current one. A tenant's export withholds
    the contents of other tenants' contract files, listing their paths (which name those
    tenants) and hashes, which the digest needs (docs/procurement.md)."""
    current = snapshot_policy(data_dir, opts.policy_bundle or None)
    snapshots = policy_snapshots(data_dir)
    index = []
    for digest in sorted(set(seen) | {current}):
        files = snapshots.get(digest)
        if files is None:
            continue
        hexd = digest.removeprefix("sha256:")
        withheld = {}
        for rel, raw in files.items():
            owner = contract_owner(rel, raw) if opts.tenant is not None else None
            if owner is not None and owner != opts.tenant_name:
                withheld[rel] = hashlib.sha256(raw).hexdigest()
            else:
                out.add(f"policies/{hexd}/{rel}", raw)
        _, first, _, last, count = seen.get(digest, [0, None, 0, None, 0])
        index.append({"digest": digest, "files": sorted(set(files) - set(withheld)),
                      "withheld": dict(sorted(withheld.items())), "records": count,
                      "current": digest == current,
                      "first_seen": iso(first) if first is not None else None,
                      "last_seen": iso(last) if last is not None else None})
    out.add("policies/index.json", _dumps(index))
    return index


def _add_checkpoints(out: _Zip, store: LogStore, log_id: str, first_leaf: int,
                     latest: tuple[int, bytes, str]) -> list[tuple[int, str]]:
    cps = _checkpoints(store, log_id, first_leaf, latest)
    proofs = ProofSource(store, log_id)
    for size, note in cps:
        out.add(f"checkpoints/{size:012d}.note", note.encode())
    chain = [proofs.consistency(a[0], b[0]).to_json() for a, b in itertools.pairwise(cps)]
    out.add("checkpoints/consistency.json", _dumps(chain))
    return cps


def _add_records(out: _Zip, checker: RowChecker, rows: Iterator[tuple[int, Any]],
                 count: int, progress: Progress | None) -> None:
    """Each row with its inclusion proof in the latest checkpoint, once the row has been
    checked against its signature and the proof against the checkpoint's signed root (again:
    the store may have changed since the scan, but not the signed tree's leaves). Proofs are
    read from the store ``_PROOF_BATCH`` rows at a time."""
    done = 0
    with out.stream("records/records.jsonl") as write:
        while batch := list(itertools.islice(rows, _PROOF_BATCH)):
            missing = next((index for index, row in batch if row is None), None)
            if missing is not None:
                raise ExportFailed(_unsound(f"leaf {missing} is missing"))
            try:
                proofs = checker.placed_all(batch)
            except VerificationError as exc:
                raise ExportFailed(_unsound(exc.detail)) from None
            write(b"".join(json.dumps({
                "leaf_index": index, "record_id": row.record_id,
                "envelope": bytes(row.envelope).decode(), "inclusion": proof.to_json(),
            }, sort_keys=True).encode() + b"\n" for (index, row), proof in zip(batch, proofs, strict=True)))
            done += len(batch)
            if progress is not None:
                progress("proving records", done, count)


_PROOF_BATCH = 256


def _finish(out: _Zip, context: dict[str, Any], key: Ed25519PrivateKey) -> None:
    manifest = {
        "format": FORMAT, "created": context["created"],
        "window": {"from": context["window_from"], "to": context["window_to"]},
        "tenant": context["tenant"], "log": context["log"], "simulated": context["simulated"],
        "latest_checkpoint": context["latest_size"], "records": context["records"],
        "files": dict(sorted(out.hashes.items())),
    }  # fmt: skip
    raw = _dumps(manifest)
    out.add("manifest.json", raw)
    out.add("manifest.sig", sign_manifest(raw, key))
    out.zf.close()
