"""Offline verification of an evidence bundle: every check runs, each failure is named."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import audit
from audit import Receipt, SignedCheckpoint, verify_consistency, verify_receipt
from proxy.attestation import VerificationError as AttestationError
from proxy.attestation import VerificationPolicy, verify_identity

from ._errors import BundleInvalid
from ._manifest import parse_vkey, raw_public, verify_manifest
from ._state import policy_digest
from ._verdict import BundleVerdict, Check
from ._verify_records import RecordChecks

__all__ = ["verify_bundle"]

_SIGNED = ("manifest.json", "manifest.sig")
_MAX_ZIP_BYTES = 2 << 30


def _read_zip(source: str | Path | bytes) -> dict[str, bytes]:
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with handle, zipfile.ZipFile(handle) as zf:
            if sum(i.file_size for i in zf.infolist()) > _MAX_ZIP_BYTES:
                raise BundleInvalid("bundle is too large")
            return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleInvalid(f"cannot read the bundle as a zip archive ({type(exc).__name__})") from exc


class _Verifier:
    def __init__(self, files: dict[str, bytes], pinned: str | None) -> None:
        self.files, self.pinned = files, pinned
        self.checks: list[Check] = []
        self.manifest: dict[str, Any] = {}
        self.vkey = ""

    def add(self, name: str, ok: bool, detail: str, file: str | None = None,
            insecure: bool = False) -> None:
        self.checks.append(Check(name, ok, detail, file, insecure))

    def run(self) -> None:
        if not self.check_manifest():
            return
        self.check_hashes()
        evidence = self.check_identities()
        policies = self.check_policies()
        latest = self.check_checkpoints()
        RecordChecks(self, latest, policies, evidence).run()

    def check_manifest(self) -> bool:
        raw = self.files.get("manifest.json")
        try:
            manifest = json.loads(raw or b"")
            self.vkey = str(manifest["log"]["vkey"])
            key = parse_vkey(self.vkey)
        except (ValueError, KeyError, TypeError):
            self.add("manifest", False, "missing or malformed manifest", "manifest.json")
            return False
        self.manifest = manifest
        if self.pinned is not None and self.pinned != self.vkey:
            self.add("log key", False, "bundle is signed by another log key", "manifest.json")
        ok = verify_manifest(raw or b"", self.files.get("manifest.sig", b""), key)
        self.add("manifest signature", ok,
                 "Ed25519 signature by the log key" if ok else "signature does not verify",
                 "manifest.sig" if ok else "manifest.json, manifest.sig")
        return True

    def check_hashes(self) -> None:
        listed = self.manifest.get("files")
        listed = listed if isinstance(listed, dict) else {}
        bad = 0
        for name in sorted(set(self.files) | set(listed)):
            if name in _SIGNED:
                continue
            if name not in listed:
                self.add("file hash", False, "file is not listed in the manifest", name)
            elif name not in self.files:
                self.add("file hash", False, "file listed in the manifest is missing", name)
            elif hashlib.sha256(self.files[name]).hexdigest() != listed[name]:
                self.add("file hash", False, "SHA-256 differs from the manifest", name)
            else:
                continue
            bad += 1
        if not bad:
            self.add("file hashes", True, f"{len(listed) - 2} files match the manifest")

    def check_identities(self) -> set[str]:
        simulated = self.manifest.get("simulated") is True
        policy = VerificationPolicy(allow_simulated=simulated)
        digests: set[str] = set()
        names = sorted(n for n in self.files if n.startswith("identity/"))
        for name in names:
            try:
                doc = json.loads(self.files[name])
                created = datetime.fromisoformat(str(doc.get("created")))
                verified = verify_identity(doc, policy, now=created)
            except (ValueError, TypeError, AttestationError) as exc:
                self.add("attestation", False, f"identity document does not verify: {exc}", name)
                continue
            if verified.audit_public_key != raw_public(parse_vkey(self.vkey)):
                self.add("attestation", False, "attested audit key is not the log key", name)
                continue
            digests.add(verified.evidence_digest)
            detail = (f"{verified.platform} evidence binds the log key, policy "
                      f"{verified.policy_digest[:19]}… and measurement")
            self.add("attestation", True, detail + (" (SIMULATED: insecure)"
                                                    if verified.simulated else ""),
                     name, insecure=verified.simulated)
        if not names:
            self.add("attestation", False, "the bundle holds no identity document", "identity/")
        return digests

    def check_policies(self) -> set[str]:
        name = "policies/index.json"
        try:
            index = json.loads(self.files.get(name, b""))
            entries = [(str(e["digest"]), list(e["files"])) for e in index]
        except (ValueError, KeyError, TypeError):
            self.add("policy digest", False, "missing or malformed policy index", name)
            return set()
        good: set[str] = set()
        for digest, rels in entries:
            folder = f"policies/{digest.removeprefix('sha256:')}/"
            files = {k.removeprefix(folder): v for k, v in self.files.items()
                     if k.startswith(folder)}
            if sorted(files) == sorted(rels) and policy_digest(files) == digest:
                good.add(digest)
                self.add("policy digest", True, f"{len(files)} files hash to {digest[:19]}…", folder)
            else:
                self.add("policy digest", False, "files do not hash to the bundle digest", folder)
        return good

    def check_checkpoints(self) -> SignedCheckpoint | None:
        chain: list[SignedCheckpoint] = []
        for name in sorted(n for n in self.files if n.startswith("checkpoints/")
                           and n.endswith(".note")):
            try:
                cp = SignedCheckpoint.parse(self.files[name].decode(), self.vkey)
                if f"checkpoints/{cp.size:012d}.note" != name:
                    raise audit.VerificationError("file name differs from the signed tree size")
            except (audit.AuditError, UnicodeDecodeError) as exc:
                self.add("checkpoint signature", False, str(exc), name)
                continue
            chain.append(cp)
        if not chain:
            self.add("checkpoint signature", False, "no valid checkpoint", "checkpoints/")
            return None
        self.add("checkpoint signature", True, f"{len(chain)} signed checkpoints", "checkpoints/")
        self.check_consistency(chain)
        latest = chain[-1]
        if latest.size != self.manifest.get("latest_checkpoint"):
            self.add("checkpoint", False, "latest checkpoint is not the one the manifest names",
                     f"checkpoints/{latest.size:012d}.note")
        return latest

    def check_consistency(self, chain: list[SignedCheckpoint]) -> None:
        name = "checkpoints/consistency.json"
        try:
            proofs = {(p["from"], p["to"]): p["hashes"] for p in json.loads(self.files[name])}
        except (ValueError, KeyError, TypeError):
            self.add("consistency", False, "missing or malformed consistency proofs", name)
            return
        for old, new in itertools.pairwise(chain):
            try:
                hashes = [base64.b64decode(h, validate=True) for h in proofs[(old.size, new.size)]]
                verify_consistency(old.size, new.size, old.root_hash, new.root_hash, hashes)
            except (KeyError, ValueError, TypeError, audit.AuditError) as exc:
                detail = f"tree {old.size} → {new.size}: {exc}"
                self.add("consistency", False, detail, name)
                return
        self.add("consistency", True, f"{len(chain) - 1} consecutive proofs verify", name)

    def receipt(self, leaf: int, record_id: str, envelope: bytes) -> Receipt:
        sig = json.loads(envelope)["signatures"][0]["sig"]
        return Receipt(record_id, leaf, str(sig), str(self.manifest["log"]["log_id"]))

    def verify_record(self, receipt: Receipt, envelope: bytes, latest: SignedCheckpoint,
                      proof: dict[str, Any]) -> dict[str, Any]:
        return verify_receipt(receipt, envelope, latest.note, proof, self.vkey)


def verify_bundle(source: str | Path | bytes, *, vkey: str | None = None) -> BundleVerdict:
    """Verify a bundle offline; ``vkey`` pins the expected log key."""
    verifier = _Verifier(_read_zip(source), vkey)
    verifier.run()
    return BundleVerdict(tuple(verifier.checks))
