"""Offline verification of an evidence bundle: every check runs, each failure is named."""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import audit
from audit import ConsistencyProof, SignedCheckpoint, verify_consistency
from policy import PolicyBundleError, bundle_digest
from proxy.attestation import Collateral, VerificationPolicy, verify_identity
from proxy.attestation import VerificationError as AttestationError

from ._errors import BundleInvalid
from ._fields import array, load, obj, string
from ._manifest import Manifest, parse_vkey, raw_public, verify_manifest
from ._verdict import BundleVerdict, Check
from ._verify_records import RecordChecks

__all__ = ["verify_bundle"]

_SIGNED = ("manifest.json", "manifest.sig")
# Files every export writes (proxy/evidence/_export.py), besides what other checks require.
_REQUIRED = ("log.json", "report.html", "policies/index.json", "records/records.jsonl")
_MAX_ZIP_BYTES = 2 << 30
_SIMULATED = ("simulated evidence (development only, proves nothing about the machine) is "
              "refused; verify with --allow-simulated to accept it as insecure")


def _check_entry(info: zipfile.ZipInfo, seen: set[str]) -> None:
    """One name per entry, relative and without ``..``, and no data in directory entries: an
    unzip tool must extract exactly the files that were verified."""
    name = info.filename
    parts = name.removesuffix("/").split("/")
    if name in seen:
        raise BundleInvalid(f"duplicate zip entry {name[:80]!r}")
    if ":" in parts[0] or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise BundleInvalid(f"unsafe zip entry name {name[:80]!r}")
    if info.is_dir() and info.file_size:
        raise BundleInvalid(f"directory entry {name[:80]!r} carries data")
    seen.add(name)


def _read_zip(source: str | Path | bytes) -> dict[str, bytes]:
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with handle, zipfile.ZipFile(handle) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > _MAX_ZIP_BYTES:
                raise BundleInvalid("bundle is too large")
            seen: set[str] = set()
            for info in infos:
                _check_entry(info, seen)
            return {i.filename: zf.read(i) for i in infos if not i.is_dir()}
    except BundleInvalid:
        raise
    except Exception as exc:  # crafted archives raise zlib.error, NotImplementedError, ...
        kind = type(exc).__name__ if type(exc).__module__ == "builtins" else (
            f"{type(exc).__module__}.{type(exc).__name__}")
        raise BundleInvalid(f"cannot read the bundle as a zip archive ({kind})") from exc


class _Verifier:
    def __init__(self, files: dict[str, bytes], pinned: str | None,
                 policy: VerificationPolicy, collateral: Collateral | None = None) -> None:
        self.files, self.pinned, self.policy = files, pinned, policy
        self.collateral = collateral
        self.checks: list[Check] = []
        self.manifest = Manifest("", "", {}, ("", ""), None, 0, [])
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
        raw = self.files.get("manifest.json", b"")
        try:
            manifest = Manifest.parse(raw)
            key = parse_vkey(manifest.vkey)
        except BundleInvalid as exc:
            self.add("manifest", False, f"missing or malformed manifest: {exc.detail}", "manifest.json")
            return False
        except ValueError as exc:
            self.add("manifest", False, f"malformed manifest log key: {exc}", "manifest.json")
            return False
        self.manifest, self.vkey = manifest, manifest.vkey
        if self.pinned is not None and self.pinned != self.vkey:
            self.add("log key", False, "bundle is signed by another log key", "manifest.json")
        ok = verify_manifest(raw, self.files.get("manifest.sig", b""), key)
        self.add("manifest signature", ok,
                 "Ed25519 signature by the log key" if ok else "signature does not verify",
                 "manifest.sig" if ok else "manifest.json, manifest.sig")
        return True

    def check_hashes(self) -> None:
        listed = self.manifest.files
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
        for name in _REQUIRED:  # even a bundle its own key signed must be whole
            if name not in listed:
                self.add("file hash", False, "a file every bundle holds is not listed", name)
                bad += 1
        if not bad:
            self.add("file hashes", True, f"{len(listed) - 2} files match the manifest")

    def check_identities(self) -> set[str]:
        # What evidence is acceptable (simulated, which measurements) is the verifier's call,
        # never the bundle's: anyone can mint a simulated document for a fresh key.
        policy = self.policy
        digests: set[str] = set()
        names = sorted(n for n in self.files if n.startswith("identity/"))
        for name in names:
            try:
                doc = obj(load(self.files[name], "identity document"), "identity document")
                created = datetime.fromisoformat(string(doc.get("created"), "document created"))
                verified = verify_identity(doc, policy, now=created, collateral=self.collateral)
            except AttestationError as exc:
                detail = _SIMULATED if exc.code == "simulated_not_allowed" else (
                    f"identity document does not verify: {exc}")
                self.add("attestation", False, detail, name)
                continue
            except BundleInvalid as exc:
                self.add("attestation", False, f"malformed identity document: {exc.detail}", name)
                continue
            except (ValueError, TypeError) as exc:
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
            index = array(load(self.files.get(name, b""), "policy index"), "policy index", obj)
            entries = [(string(e.get("digest"), "policy digest"),
                        array(e.get("files"), "policy files", string)) for e in index]
        except BundleInvalid as exc:
            self.add("policy digest", False, f"missing or malformed policy index: {exc.detail}", name)
            return set()
        good: set[str] = set()
        for digest, rels in entries:
            folder = f"policies/{digest.removeprefix('sha256:')}/"
            files = {k.removeprefix(folder): v for k, v in self.files.items()
                     if k.startswith(folder)}
            if sorted(files) == sorted(rels) and _digest(files) == digest:
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
        if latest.size != self.manifest.latest_checkpoint:
            self.add("checkpoint", False, "latest checkpoint is not the one the manifest names",
                     f"checkpoints/{latest.size:012d}.note")
        return latest

    def check_consistency(self, chain: list[SignedCheckpoint]) -> None:
        name = "checkpoints/consistency.json"
        try:
            items = array(load(self.files.get(name, b""), "consistency proofs"), "consistency proof", obj)
            proofs = {(p.old, p.new): p.hashes for p in map(ConsistencyProof.from_json, items)}
        except (BundleInvalid, audit.AuditError) as exc:
            self.add("consistency", False, f"missing or malformed consistency proofs: {exc.detail}",
                     name)
            return
        for old, new in itertools.pairwise(chain):
            try:
                hashes = proofs.get((old.size, new.size))
                if hashes is None:
                    raise audit.VerificationError("no consistency proof")
                verify_consistency(old.size, new.size, old.root_hash, new.root_hash, hashes)
            except audit.AuditError as exc:
                self.add("consistency", False, f"tree {old.size} → {new.size}: {exc}", name)
                return
        self.add("consistency", True, f"{len(chain) - 1} consecutive proofs verify", name)


def _digest(files: dict[str, bytes]) -> str | None:
    try:
        return bundle_digest(files)
    except PolicyBundleError:  # a file name that could forge listing lines matches nothing
        return None


def verify_bundle(source: str | Path | bytes, *, vkey: str | None = None,
                  allow_simulated: bool = False,
                  policy: VerificationPolicy | None = None,
                  collateral: Collateral | None = None) -> BundleVerdict:
    """Verify a bundle offline; ``vkey`` pins the expected log key.

    Identity documents are judged by ``policy`` (default: the strict one, which refuses real
    evidence without a measurement allowlist); ``allow_simulated`` lets simulated
    (development) evidence pass it. ``collateral`` is the platform collateral the verifier
    fetched itself (TDX TCB info, QE identity and CRLs; SEV-SNP certificates), which the
    strict policy needs for TDX evidence. What the bundle's own manifest says is not consulted.
    Raises ``BundleInvalid`` when the file is not a readable, well-formed zip archive.
    """
    policy = policy or VerificationPolicy()
    if allow_simulated:
        policy = replace(policy, allow_simulated=True)
    verifier = _Verifier(_read_zip(source), vkey, policy, collateral)
    verifier.run()
    return BundleVerdict(tuple(verifier.checks))
