"""The bundle manifest: SHA-256 of every file, signed with the log's Ed25519 key.

The signature is over ``b"sealgate-evidence-manifest/v1\\n" || manifest.json bytes`` (domain
separation from records and checkpoints, which the same key signs); ``manifest.sig`` holds it
in base64. The key is named by the log's C2SP note verifier key (``name+keyid+base64``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ._fields import array, integer, load, obj, string

__all__ = ["DOMAIN", "Manifest", "parse_vkey", "sign_manifest", "verify_manifest"]

DOMAIN = b"sealgate-evidence-manifest/v1\n"


def sign_manifest(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    return base64.b64encode(key.sign(DOMAIN + manifest)) + b"\n"


def parse_vkey(vkey: str) -> Ed25519PublicKey:
    """c2sp.org/signed-note verifier key; raises ValueError when malformed or inconsistent."""
    try:
        name, hexid, b64 = vkey.split("+", 2)
        raw = base64.b64decode(b64, validate=True)
        kid = bytes.fromhex(hexid)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("malformed verifier key") from exc
    if len(raw) != 33 or raw[0] != 0x01 or len(kid) != 4:
        raise ValueError("unsupported verifier key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4] != kid:
        raise ValueError("verifier key id does not match its key")
    return Ed25519PublicKey.from_public_bytes(raw[1:])


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify_manifest(manifest: bytes, signature: bytes, key: Ed25519PublicKey) -> bool:
    """``signature`` (``manifest.sig``) is exactly what ``sign_manifest`` writes, and valid:
    canonical base64 and one newline, so that no byte of it goes unchecked."""
    try:
        raw = base64.b64decode(signature.removesuffix(b"\n"), validate=True)
        key.verify(raw, DOMAIN + manifest)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return signature == base64.b64encode(raw) + b"\n"


@dataclass(frozen=True)
class Manifest:
    """The fields of ``manifest.json`` that verification relies on, type-checked."""

    vkey: str
    log_id: str
    files: dict[str, str]
    """Bundle path → SHA-256 hex of every file but the manifest and its signature."""
    window: tuple[str, str]
    tenant: str | None
    latest_checkpoint: int
    leaves: list[int]

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """Raises ``BundleInvalid`` naming the first malformed field."""
        doc = obj(load(raw, "manifest"), "manifest")
        log = obj(doc.get("log"), "manifest log")
        window = obj(doc.get("window"), "manifest window")
        files = obj(doc.get("files"), "manifest files")
        tenant = doc.get("tenant")
        return cls(
            string(log.get("vkey"), "manifest log vkey"),
            string(log.get("log_id"), "manifest log id"),
            {name: string(digest, "manifest file hash") for name, digest in files.items()},
            (string(window.get("from"), "manifest window"), string(window.get("to"), "manifest window")),
            None if tenant is None else string(tenant, "manifest tenant"),
            integer(doc.get("latest_checkpoint"), "manifest latest checkpoint"),
            array(obj(doc.get("records"), "manifest records").get("leaves"), "manifest leaves", integer),
        )
