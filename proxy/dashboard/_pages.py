"""Page data that needs the log or the data directory: record detail, log health, enclave,
policies."""

from __future__ import annotations

import asyncio
import base64
import difflib
import hashlib
import json
from datetime import datetime
from typing import Any

from audit import AuditError, Receipt, verify_receipt
from proxy.attestation import VerificationError, VerificationPolicy, verify_identity
from proxy.evidence import identity_documents, policy_snapshots, snapshot_policy

from ._backlog import SLICE_S
from ._service import DashboardService, Viewer
from ._views import fmt_us

__all__ = ["enclave_page", "health_page", "policies_page", "record_page"]

_MAX_PAIRS_PER_VIEW = 2000  # checkpoints a view checks (a signature and a proof each) …
_MAX_SECONDS_PER_VIEW = SLICE_S  # … within about this long
_CATCH_UP = True  # the rest are checked in the background


async def record_page(svc: DashboardService, viewer: Viewer, record_id: str) -> dict[str, Any] | None:
    """The record and its inclusion proof checked against the latest checkpoint, or None when
    the viewer may not see it (absent and foreign look the same)."""
    log = svc.audit
    row = await asyncio.to_thread(log.store.get_record, record_id)
    if row is None or row.log_id != log.log_id or (viewer.scope and row.tenant != viewer.scope):
        return None
    envelope = bytes(row.envelope)
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    latest = await log.checkpoint()
    proof: dict[str, Any] = {"checkpoint_size": latest.size, "verified": False}
    if int(row.leaf_index) < latest.size:  # a negative index (an edited row) fails the proof
        sig = json.loads(envelope)["signatures"][0]["sig"]
        receipt = Receipt(row.record_id, int(row.leaf_index), sig, log.log_id)
        try:
            inclusion = await log.inclusion_proof(int(row.leaf_index))
            verify_receipt(receipt, envelope, latest.note, inclusion, log.vkey)
            proof.update(verified=True, hashes=len(inclusion.hashes))
        except AuditError as exc:
            proof["error"] = str(exc)
    else:
        proof["pending"] = True
    fields = [(key, _shown(value)) for key, value in sorted(statement["predicate"].items())]
    return {"row": row, "time": fmt_us(int(row.time_us)), "fields": fields, "proof": proof,
            "checkpoint": latest.note}


def _shown(value: Any) -> str:
    """A record field for people: lists comma-separated (``none`` when empty), objects one
    ``key: value`` per line, JSON's ``true``/``false``/``null`` for the rest, not Python's."""
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_shown(v)}" for k, v in sorted(value.items())) or "none"
    if isinstance(value, str):
        return value
    return json.dumps(value)


async def health_page(svc: DashboardService) -> dict[str, Any]:
    log = svc.audit
    store = log.store
    chain = await svc.chain.view(log, _MAX_PAIRS_PER_VIEW, _MAX_SECONDS_PER_VIEW,
                                background=_CATCH_UP)
    count = await asyncio.to_thread(store.count_records, log.log_id)
    top = await asyncio.to_thread(store.next_index, log.log_id)
    recent = await asyncio.to_thread(store.checkpoints, log.log_id, after=0, limit=10,
                                     newest_first=True)
    latest = recent[0] if recent else None
    return {"latest": latest, "checkpoints": chain.checkpoints, "pairs": chain.pairs,
            "unchecked": chain.unchecked, "records": count, "gaps": top - count,
            "unintegrated": count - (latest[0] if latest else 0), "problems": chain.problems,
            "more_problems": chain.more_problems,
            "recent": [(s, n) for s, _r, n in recent], "origin": log.origin, "vkey": log.vkey}


def _kept_documents_policy(svc: DashboardService, collateral: bool) -> VerificationPolicy:
    """This gateway's own documents: pinned to its configured release measurement, if any.
    Without collateral a TDX document's TCB status cannot be evaluated; its verdict says so."""
    measurement = svc.settings.release_measurement.lower()
    pinned = ({"allowed_measurements": frozenset({measurement})} if measurement
              else {"allow_any_measurement": True})
    return VerificationPolicy(allow_simulated=True, require_tcb_status=collateral, **pinned)


def _verify_doc(svc: DashboardService, name: str, doc: dict[str, Any]) -> tuple[bool, str]:
    """The verdict on a kept identity document, cached by its name and content: a document
    edited in place is verified again, not shown with the verdict its earlier content got."""
    key = f"{name}:{hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()}"
    if key not in svc.identity_verdicts:
        try:
            collateral = svc.collateral()
            created = datetime.fromisoformat(str(doc.get("created")))
            found = verify_identity(doc, _kept_documents_policy(svc, collateral is not None),
                                    now=created, collateral=collateral)
            text = "verified"
            if found.simulated:
                text += " (SIMULATED: insecure)"
            elif found.platform == "tdx" and found.tcb_status is None:
                text += " (TCB status not checked: no collateral_dir configured)"
            elif found.tcb_status is not None:
                text += f" (TCB status {found.tcb_status})"
            svc.identity_verdicts[key] = (True, text)
        except (VerificationError, ValueError, TypeError) as exc:
            svc.identity_verdicts[key] = (False, str(exc))
    return svc.identity_verdicts[key]


async def enclave_page(svc: DashboardService, viewer: Viewer) -> dict[str, Any]:
    index = await svc.index()
    docs = await asyncio.to_thread(identity_documents, svc.data_dir)
    current = await svc.identity.document()
    rows, previous = [], None
    for name, doc in docs.items():
        ok, verdict = _verify_doc(svc, name, doc)
        measurement = str(doc.get("measurement"))
        rows.append({"name": name, "created": doc.get("created"), "platform": doc.get("platform"),
                     "measurement": measurement, "ok": ok, "verdict": verdict,
                     "changed": previous is not None and previous != measurement,
                     "current": doc.get("report_data") == current.get("report_data")})
        previous = measurement
    seen = [(d, fmt_us(s.first_us), fmt_us(s.last_us), n)
            for d, s, n in index.seen(index.evidence, viewer.scope)]
    return {"index_behind": await svc.index_behind(index),
            "documents": rows[::-1], "platform": current.get("platform"),
            "simulated": current.get("platform") == "simulated", "evidence_seen": seen}


def _diff(old: dict[str, bytes], new: dict[str, bytes]) -> str:
    out: list[str] = []
    for rel in sorted(set(old) | set(new)):
        a = old.get(rel, b"").decode(errors="replace").splitlines()
        b = new.get(rel, b"").decode(errors="replace").splitlines()
        out += difflib.unified_diff(a, b, f"previous/{rel}", f"current/{rel}", lineterm="")
    return "\n".join(out) or "(no differences)"


def _rules_only(files: dict[str, bytes]) -> dict[str, bytes]:
    """The Rego sources of a bundle: its data files hold every tenant's contract."""
    return {rel: raw for rel, raw in files.items() if rel.endswith(".rego")}


async def policies_page(svc: DashboardService, viewer: Viewer, compare: str | None) -> dict[str, Any]:
    """The bundle in force (as the engine enforces it, which a refused reload leaves as it
    was), the versions records cite, and diffs. A viewer scoped to one tenant sees only the
    versions its own records cite, and of their files only the Rego rules."""
    index = await svc.index()
    current = await asyncio.to_thread(snapshot_policy, svc.data_dir, svc.bundle() or None)
    snapshots = await asyncio.to_thread(policy_snapshots, svc.data_dir)
    seen = [(d, fmt_us(s.first_us), fmt_us(s.last_us), n, d in snapshots)
            for d, s, n in index.seen(index.policies, viewer.scope)]
    visible = set(snapshots) if viewer.scope is None else {d for d, *_ in seen} | {current}
    shown = (lambda files: files) if viewer.scope is None else _rules_only
    files = shown(snapshots.get(current, {}))
    diff = None
    if compare and compare in snapshots and compare in visible and compare != current:
        diff = _diff(shown(snapshots[compare]), files)
    return {"index_behind": await svc.index_behind(index),
            "current": current, "files": sorted(files), "seen": seen, "compare": compare,
            "diff": diff, "stored": [d for d in snapshots if d != current and d in visible],
            "rules_only": viewer.scope is not None}
