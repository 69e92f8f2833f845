"""The record checks of bundle verification: signatures, inclusion, policy and evidence cited."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import audit
from audit import SignedCheckpoint

if TYPE_CHECKING:
    from ._verify import _Verifier

__all__ = ["RecordChecks"]

FILE = "records/records.jsonl"
_MAX_NAMED = 10


class RecordChecks:
    def __init__(self, verifier: _Verifier, latest: SignedCheckpoint | None,
                 policies: set[str], evidence: set[str]) -> None:
        self.v, self.latest, self.policies, self.evidence = verifier, latest, policies, evidence
        self.failed: dict[str, list[str]] = {}
        self.leaves: list[int] = []

    def fail(self, check: str, detail: str) -> None:
        self.failed.setdefault(check, []).append(detail)

    def run(self) -> None:
        lines = self.v.files.get(FILE, b"").splitlines()
        manifest = self.v.manifest
        window = manifest.get("window", {})
        tenant = manifest.get("tenant")
        for n, line in enumerate(lines, 1):
            self.one(n, line, window, tenant)
        self.check_set(manifest.get("records", {}))
        for check in ("record signature", "inclusion", "record window", "policy in force",
                      "evidence binding"):
            errors = self.failed.get(check, [])
            if errors:
                more = f" (+{len(errors) - _MAX_NAMED} more)" if len(errors) > _MAX_NAMED else ""
                self.v.add(check, False, "; ".join(errors[:_MAX_NAMED]) + more, FILE)
            else:
                self.v.add(check, True, f"{len(lines)} records", FILE)

    def one(self, n: int, line: bytes, window: dict[str, Any], tenant: Any) -> None:
        try:
            item = json.loads(line)
            leaf, envelope = int(item["leaf_index"]), str(item["envelope"]).encode()
            receipt = self.v.receipt(leaf, str(item["record_id"]), envelope)
        except (ValueError, KeyError, TypeError, IndexError, audit.AuditError):
            self.fail("record signature", f"line {n}: malformed record entry")
            return
        self.leaves.append(leaf)
        if self.latest is None:
            self.fail("inclusion", f"leaf {leaf}: no checkpoint to prove against")
            return
        try:
            statement = self.v.verify_record(receipt, envelope, self.latest, item["inclusion"])
        except (audit.AuditError, KeyError, TypeError) as exc:
            proof_words = ("proof", "root", "tree")
            kind = "inclusion" if any(w in str(exc) for w in proof_words) else "record signature"
            self.fail(kind, f"leaf {leaf}: {exc}")
            return
        pred = statement.get("predicate", {})
        if not window.get("from", "") <= str(pred.get("time")) < window.get("to", ""):
            self.fail("record window", f"leaf {leaf}: time outside the window")
        if tenant is not None and pred.get("tenant") != tenant:
            self.fail("record window", f"leaf {leaf}: record of another tenant")
        if pred.get("policy_bundle_digest") not in self.policies:
            self.fail("policy in force", f"leaf {leaf}: cites a policy bundle not in the bundle")
        if pred.get("evidence_digest") not in self.evidence:
            self.fail("evidence binding", f"leaf {leaf}: cites enclave evidence not attested here")

    def check_set(self, records: dict[str, Any]) -> None:
        listed = records.get("leaves")
        if listed != self.leaves:
            missing = sorted(set(listed or []) - set(self.leaves))[:_MAX_NAMED]
            extra = sorted(set(self.leaves) - set(listed or []))[:_MAX_NAMED]
            detail = f"records differ from the manifest (missing leaves {missing}, extra {extra})"
            self.v.add("record set", False, detail, FILE)
            return
        self.v.add("record set", True, f"{len(self.leaves)} records, as the manifest lists", FILE)
