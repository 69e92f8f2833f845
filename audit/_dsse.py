"""DSSE v1 envelopes (secure-systems-lab/dsse, envelope.md + protocol.md) with Ed25519."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._errors import VerificationError

__all__ = ["PAYLOAD_TYPE", "open_envelope", "pae", "read_envelope", "seal_envelope"]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
_KEYID = re.compile(r"^[0-9a-f]{1,64}$")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE protocol §Signature definition: PAE(type, body)."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def seal_envelope(payload: bytes, key: Ed25519PrivateKey, keyid: str) -> tuple[bytes, bytes]:
    """Sign ``payload``; returns (canonical envelope bytes, raw signature)."""
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    if not _KEYID.fullmatch(keyid):
        raise ValueError("DSSE keyid must be lowercase hex")
    # RFC 8785 output for this fixed shape: keys in code-unit order, and every value is
    # base64 or hex or the constant type, none of which JSON escapes. A test pins the
    # equality with rfc8785.dumps.
    envelope = (
        f'{{"payload":"{base64.b64encode(payload).decode()}",'
        f'"payloadType":"{PAYLOAD_TYPE}",'
        f'"signatures":[{{"keyid":"{keyid}","sig":"{base64.b64encode(sig).decode()}"}}]}}'
    )
    return envelope.encode(), sig


def _decode(envelope: bytes) -> tuple[bytes, list[Any]]:
    try:
        obj = json.loads(envelope)
        payload = base64.b64decode(obj["payload"], validate=True)
        sigs = obj["signatures"]
        if obj["payloadType"] != PAYLOAD_TYPE or not isinstance(sigs, list):
            raise VerificationError("unexpected envelope payload type")
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:  # also absurd nesting
        raise VerificationError("malformed envelope") from exc
    return payload, sigs


def read_envelope(envelope: bytes) -> dict[str, Any]:
    """The statement of an envelope, its signatures not checked: for a caller that proves the
    envelope is a leaf of a tree the log key signed (the log integrates only records it signed,
    or whose signatures it checked)."""
    return _statement(_decode(envelope)[0])


def _statement(payload: bytes) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise VerificationError("malformed statement") from exc
    if not isinstance(statement, dict):
        raise VerificationError("malformed statement")
    return statement


def open_envelope(
    envelope: bytes, public_key: Ed25519PublicKey, keyid: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """Verify an envelope signed by ``public_key``; returns (statement, signature).

    Only signatures whose keyid matches (when given) are tried; one valid one suffices.
    """
    payload, sigs = _decode(envelope)
    message = pae(PAYLOAD_TYPE, payload)
    for entry in sigs:
        if not isinstance(entry, dict) or (keyid is not None and entry.get("keyid") != keyid):
            continue
        try:
            sig = base64.b64decode(entry["sig"], validate=True)
            public_key.verify(sig, message)
        except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
            continue
        return _statement(payload), sig
    raise VerificationError("no valid envelope signature for the log key")
