"""Key binding: REPORT_DATA = SHA-512(RFC 8785 JSON of what the enclave vouches for).

The canonical object (docs/attestation.md, "REPORT_DATA encoding") is::

    {"audit_key": b64(Ed25519 raw public key), "created": document creation time,
     "key_configs": b64(application/ohttp-keys), "measurement": release measurement,
     "nonce": b64(nonce) or null, "policy_digest": "sha256:<hex>"}

Base64 is standard with padding (RFC 4648 §4). RFC 8785 sorts the keys and fixes the string
escaping, so client and server produce the same bytes. ``created`` is bound so that a
verifier's ``max_age_s`` judges a time the evidence vouches for, not an editable field.
"""

from __future__ import annotations

import base64
import hashlib

import rfc8785

__all__ = ["binding_object", "compute_report_data"]


def binding_object(
    key_configs: bytes, audit_key: bytes, policy_digest: str, measurement: str,
    nonce: bytes | None, created: str,
) -> dict[str, str | None]:
    """The JSON object whose canonical encoding is hashed into REPORT_DATA."""
    return {
        "key_configs": base64.b64encode(key_configs).decode("ascii"),
        "audit_key": base64.b64encode(audit_key).decode("ascii"),
        "policy_digest": policy_digest,
        "measurement": measurement,
        "nonce": None if nonce is None else base64.b64encode(nonce).decode("ascii"),
        "created": created,
    }


def compute_report_data(
    key_configs: bytes, audit_key: bytes, policy_digest: str, measurement: str,
    nonce: bytes | None, created: str,
) -> bytes:
    """The 64-byte REPORT_DATA for these inputs (SHA-512 of the RFC 8785 encoding)."""
    obj = binding_object(key_configs, audit_key, policy_digest, measurement, nonce, created)
    return hashlib.sha512(rfc8785.dumps(obj)).digest()
