"""The record checks of bundle verification: signatures, inclusion, policy and evidence cited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import audit
from audit import InclusionProof, Receipt, SignedCheckpoint, verify_receipt

from ._archive import MAX_LINE, STREAMED
from ._errors import BundleInvalid
from ._export import instant_us
from ._fields import array, integer, load, obj, string
from ._verdict import unexpected

if TYPE_CHECKING:
    from ._verify import _Verifier

__all__ = ["RecordChecks"]

FILE = STREAMED
_MAX_NAMED = 10


def _entry(line: bytes, log_id: str) -> tuple[Receipt, bytes, Any]:
    """A ``records.jsonl`` line: the receipt it implies, the envelope and the (unchecked)
    inclusion proof; raises ``BundleInvalid`` when the entry or its envelope is malformed."""
    item = obj(load(line, "record entry"), "record entry")
    envelope = string(item.get("envelope"), "envelope").encode()
    signatures = array(obj(load(envelope, "envelope"), "envelope").get("signatures"),
                       "envelope signatures", obj)
    if not signatures:
        raise BundleInvalid("envelope has no signature")
    receipt = Receipt(string(item.get("record_id"), "record id"),
                      integer(item.get("leaf_index"), "leaf index"),
                      string(signatures[0].get("sig"), "envelope signature"), log_id)
    return receipt, envelope, item.get("inclusion")


class RecordChecks:
    def __init__(self, verifier: _Verifier, latest: SignedCheckpoint | None,
                 policies: set[str], evidence: set[str]) -> None:
        self.v, self.latest, self.policies, self.evidence = verifier, latest, policies, evidence
        self.failed: dict[str, list[str]] = {}
        self.leaves: list[int] = []

    def fail(self, check: str, detail: str) -> None:
        self.failed.setdefault(check, []).append(detail)

    def run(self) -> None:
        count = 0
        for count, line in enumerate(self.v.archive.lines(), 1):  # streamed: it may be large
            if line is None:
                self.fail("record signature", f"line {count}: longer than {MAX_LINE >> 20} MiB")
                continue
            try:
                self.one(count, line)
            except Exception as exc:  # one record's surprise must not hide the others'
                self.fail("record signature", f"line {count}: {unexpected(exc)}")
        self.check_set()
        for check in ("record signature", "inclusion", "record window", "policy in force",
                      "evidence binding"):
            errors = self.failed.get(check, [])
            if errors:
                more = f" (+{len(errors) - _MAX_NAMED} more)" if len(errors) > _MAX_NAMED else ""
                self.v.add(check, False, "; ".join(errors[:_MAX_NAMED]) + more, FILE)
            else:
                self.v.add(check, True, f"{count} records", FILE)

    def one(self, n: int, line: bytes) -> None:
        try:
            receipt, envelope, proof = _entry(line, self.v.manifest.log_id)
        except BundleInvalid as exc:
            self.fail("record signature", f"line {n}: malformed record entry ({exc.detail})")
            return
        leaf = receipt.leaf_index
        self.leaves.append(leaf)
        if self.latest is None:
            self.fail("inclusion", f"leaf {leaf}: no checkpoint to prove against")
            return
        try:
            statement = verify_receipt(receipt, envelope, self.latest.note,
                                       InclusionProof.from_json(obj(proof, "inclusion proof")),
                                       self.v.vkey)
        except BundleInvalid as exc:
            self.fail("inclusion", f"leaf {leaf}: {exc.detail}")
            return
        except audit.AuditError as exc:
            proof_words = ("proof", "root", "tree")
            kind = "inclusion" if any(w in str(exc) for w in proof_words) else "record signature"
            self.fail(kind, f"leaf {leaf}: {exc}")
            return
        pred = statement.get("predicate")
        if not isinstance(pred, dict):
            self.fail("record signature", f"leaf {leaf}: not a proof-of-secrecy statement")
            return
        start, end = (instant_us(t) for t in self.v.manifest.window)
        tenant = self.v.manifest.tenant
        when = instant_us(pred.get("time"))  # compared as instants, never as strings
        if start is None or end is None or when is None or not start <= when < end:
            self.fail("record window", f"leaf {leaf}: time outside the window")
        if tenant is not None and pred.get("tenant") != tenant:
            self.fail("record window", f"leaf {leaf}: record of another tenant")
        if str(pred.get("policy_bundle_digest")) not in self.policies:
            self.fail("policy in force", f"leaf {leaf}: cites a policy bundle not in the bundle")
        if str(pred.get("evidence_digest")) not in self.evidence:
            self.fail("evidence binding", f"leaf {leaf}: cites enclave evidence not attested here")

    def check_set(self) -> None:
        listed = self.v.manifest.leaves
        if listed != self.leaves:
            missing = sorted(set(listed) - set(self.leaves))[:_MAX_NAMED]
            extra = sorted(set(self.leaves) - set(listed))[:_MAX_NAMED]
            detail = f"records differ from the manifest (missing leaves {missing}, extra {extra})"
            self.v.add("record set", False, detail, FILE)
            return
        self.v.add("record set", True, f"{len(self.leaves)} records, as the manifest lists", FILE)
