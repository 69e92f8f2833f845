"""What the gateway keeps in its data directory for later evidence: identity documents it
published and snapshots of every policy bundle it enforced (both content-free).

Layout: ``identity/<sha256 of the document>.json`` and ``policies/<digest hex>/<bundle path>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policy import PolicyBundle, bundle_digest, load_bundle

__all__ = [
    "document_bytes",
    "identity_documents",
    "persist_identity",
    "policy_snapshots",
    "record_startup_state",
    "snapshot_policy",
]



def _write_once(path: Path, data: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def document_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def persist_identity(data_dir: Path, document: Mapping[str, Any]) -> str:
    """Keep one published identity document; returns its file name."""
    raw = document_bytes(document)
    name = hashlib.sha256(raw).hexdigest() + ".json"
    _write_once(data_dir / "identity" / name, raw)
    return name


def identity_documents(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every kept identity document by file name, oldest first."""
    folder = data_dir / "identity"
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            docs[path.name] = doc
    return dict(sorted(docs.items(), key=lambda item: str(item[1].get("created", ""))))


def snapshot_policy(data_dir: Path, bundle: PolicyBundle | str | Path | None = None) -> str:
    """Keep the files of a bundle: the one given, or the one loaded from a directory (default:
    the shipped one); returns its digest."""
    if not isinstance(bundle, PolicyBundle):
        bundle = load_bundle(bundle or None)
    target = data_dir / "policies" / bundle.digest.removeprefix("sha256:")
    for rel, raw in bundle.files.items():  # the very bytes the digest covers
        _write_once(target / rel, raw)
    return bundle.digest


def policy_snapshots(data_dir: Path) -> dict[str, dict[str, bytes]]:
    """Every kept bundle: digest → (relative path → bytes); entries whose files do not hash
    to their digest are left out."""
    folder = data_dir / "policies"
    out: dict[str, dict[str, bytes]] = {}
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        files = {p.relative_to(sub).as_posix(): p.read_bytes()
                 for p in sorted(sub.rglob("*")) if p.is_file() and not p.name.startswith(".")}
        digest = "sha256:" + sub.name
        if files and bundle_digest(files) == digest:
            out[digest] = files
    return out


async def record_startup_state(data_dir: Path, bundle: PolicyBundle, identity: Any) -> None:
    """At start-up and after each change: keep the identity document about to be published
    and the policy bundle in force (the engine's, not whatever the directory holds by now)."""
    persist_identity(data_dir, await identity.document())
    snapshot_policy(data_dir, bundle)
