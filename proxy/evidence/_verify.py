"""Offline verification of an evidence bundle: every check runs, each failure is named."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import audit
from audit import ConsistencyProof, SignedCheckpoint, verify_consistency
from policy import PolicyBundleError, contract_owner, listing_digest
from proxy.attestation import Collateral, VerificationPolicy, verify_identity
from proxy.attestation import VerificationError as AttestationError

from ._archive import MAX_ENTRIES, Archive, open_archive
from ._errors import BundleInvalid
from ._fields import array, load, obj, string
from ._manifest import Manifest, parse_vkey, raw_public, verify_manifest
from ._verdict import BundleVerdict, Check, unexpected
from ._verify_records import RecordChecks

__all__ = ["verify_bundle"]

T = TypeVar("T")
_SIGNED = ("manifest.json", "manifest.sig")
# Files every export writes (proxy/evidence/_export.py), besides what other checks require.
_REQUIRED = ("log.json", "report.html", "policies/index.json", "records/records.jsonl")
_MAX_POLICIES = MAX_ENTRIES
"""Policies in ``policies/index.json``: an export lists each with its modules in the archive
(only contracts are withheld), so never more than the archive has entries."""
_SIMULATED = ("simulated evidence (development only, proves nothing about the machine) is "
              "refused; verify with --allow-simulated to accept it as insecure")


class _Verifier:
    def __init__(self, archive: Archive, pinned: str | None,
                 policy: VerificationPolicy, collateral: Collateral | None = None) -> None:
        self.archive, self.files = archive, archive.files
        self.pinned, self.policy, self.collateral = pinned, policy, collateral
        self.checks: list[Check] = []
        self.manifest = Manifest("", "", {}, ("", ""), None, 0, [])
        self.vkey = ""

    def add(self, name: str, ok: bool, detail: str, file: str | None = None,
            insecure: bool = False) -> None:
        self.checks.append(Check(name, ok, detail, file, insecure))

    def guarded(self, name: str, check: Callable[[], T], fallback: T) -> T:
        """Run one check; whatever it raises on crafted input fails that check (by exception
        type, see ``unexpected``) and the checks after it still run."""
        try:
            return check()
        except Exception as exc:
            self.add(name, False, unexpected(exc))
            return fallback

    def run(self) -> None:
        if not self.guarded("manifest", self.check_manifest, False):
            return
        self.guarded("file hashes", self.check_hashes, None)
        empty: set[str] = set()
        evidence = self.guarded("attestation", self.check_identities, empty)
        policies = self.guarded("policy digest", self.check_policies, empty)
        latest = self.guarded("checkpoint signature", self.check_checkpoints, None)
        records = RecordChecks(self, latest, policies, evidence)
        self.guarded("record signature", records.run, None)

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
        listed, present = self.manifest.files, self.archive.digests
        bad = matched = 0
        for name in sorted(set(present) | set(listed)):
            if name in _SIGNED:  # what the signature covers, never listed by an export
                continue
            if name not in listed:
                self.add("file hash", False, "file is not listed in the manifest", name)
            elif name not in present:
                self.add("file hash", False, "file listed in the manifest is missing", name)
            elif present[name] != listed[name]:
                self.add("file hash", False, "SHA-256 differs from the manifest", name)
            else:
                matched += 1
                continue
            bad += 1
        for name in _REQUIRED:  # even a bundle its own key signed must be whole
            if name not in listed:
                self.add("file hash", False, "a file every bundle holds is not listed", name)
                bad += 1
        if not bad:
            self.add("file hashes", True, f"{matched} files match the manifest")

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
            except Exception as exc:  # one document's surprise must not hide the others'
                self.add("attestation", False, unexpected(exc), name)
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
        """Each listed policy's folder hashes to its digest. The files are sorted into their
        folders once, so the check takes time linear in the bundle, however many are listed."""
        name = "policies/index.json"
        try:
            index = array(load(self.files.get(name, b""), "policy index"), "policy index", obj)
            if len(index) > _MAX_POLICIES:
                raise BundleInvalid(f"policy index lists more than {_MAX_POLICIES:,} policies")
            entries = [(string(e.get("digest"), "policy digest"),
                        array(e.get("files"), "policy files", string),
                        _withheld(e.get("withheld", {}))) for e in index]
        except BundleInvalid as exc:
            self.add("policy digest", False, f"missing or malformed policy index: {exc.detail}", name)
            return set()
        folders: dict[str, dict[str, str]] = {}  # folder → path in it → SHA-256 hex
        for path, hexdigest in self.archive.digests.items():
            top, sep, rel = path.partition("/")[2].partition("/")
            if path.startswith("policies/") and sep:
                folders.setdefault(f"policies/{top}/", {})[rel] = hexdigest
        good: set[str] = set()
        checked: set[str] = set()
        for digest, rels, withheld in entries:
            folder = f"policies/{digest.removeprefix('sha256:')}/"
            if folder in checked:
                self.add("policy digest", False, "policy listed twice in the index", folder)
                continue
            checked.add(folder)
            files = folders.get(folder, {})
            if sorted(files) == sorted(rels) and not files.keys() & withheld.keys() and _digest(
                    {**files, **withheld}) == digest:
                good.add(digest)
                kept = f", {len(withheld)} other tenants' contract files by hash" if withheld else ""
                self.add("policy digest", True,
                         f"{len(files)} files{kept} hash to {digest[:19]}…", folder)
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


def _digest(hashes: dict[str, str]) -> str | None:
    try:
        return listing_digest(hashes)
    except PolicyBundleError:  # a file name that could forge listing lines matches nothing
        return None


def _withheld(value: Any) -> dict[str, str]:
    """A policy index entry's withheld files, path → hex SHA-256: only other tenants' contract
    files may be (``policy.contract_owner``); policy modules and shared data never are."""
    withheld = obj(value, "withheld policy files")
    for rel, hexdigest in withheld.items():
        string(hexdigest, "withheld file hash")
        if contract_owner(rel) is None:
            raise BundleInvalid(f"withheld policy file {rel[:80]!r} is not a tenant's contract")
    return withheld


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
    Raises ``BundleInvalid`` when the file is not a readable, well-formed zip archive within
    the size limits of ``_archive``; anything else wrong fails a named check.
    """
    policy = policy or VerificationPolicy()
    if allow_simulated:
        policy = replace(policy, allow_simulated=True)
    with open_archive(source) as archive:
        verifier = _Verifier(archive, vkey, policy, collateral)
        verifier.run()
    return BundleVerdict(tuple(verifier.checks))
