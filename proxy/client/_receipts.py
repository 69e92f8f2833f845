"""Client-side receipt checks: the record behind a response is signed by the attested log key,
included in a signed checkpoint, and commits to exactly the bytes this client sent."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import Receipt, verify_receipt, vkey_for
from proxy.client._errors import SealedTransportError

__all__ = ["VerifiedReceipt", "verify_response_receipt"]


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt that checked out: its statement and the checkpoint size it is included in."""

    receipt: Receipt
    statement: dict[str, Any]
    checkpoint_size: int


def _fail(detail: str) -> SealedTransportError:
    return SealedTransportError("receipt_invalid", detail)


def verify_response_receipt(client: httpx2.Client, base_url: str, header: str,
                            audit_public_key: bytes, *, api_key: str,
                            commitment_key: bytes | None = None,
                            request_body: bytes | None = None) -> VerifiedReceipt:
    """Fetch record, checkpoint and inclusion proof (content-free, plain) and verify them.

    ``audit_public_key`` is the Ed25519 key from the *verified* identity document, so a log
    key the enclave did not attest to is refused. With ``commitment_key`` and
    ``request_body``, the record's request commitment is recomputed too.
    """
    receipt = Receipt.parse(header)
    base = base_url.rstrip("/")
    auth = {"Authorization": f"Bearer {api_key}"}
    envelope = client.get(f"{base}/v1/audit/records/{receipt.record_id}", headers=auth)
    note = client.get(f"{base}/v1/audit/checkpoint", params={"log": receipt.log_id})
    if envelope.status_code != 200 or note.status_code != 200:
        raise _fail("the record or the checkpoint could not be fetched")
    origin = note.text.split("\n", 1)[0]
    vkey = vkey_for(origin, Ed25519PublicKey.from_public_bytes(audit_public_key))
    size = int(note.text.split("\n")[1])
    if receipt.leaf_index >= size:
        raise _fail("the record is not yet in a published checkpoint")
    proof = client.get(f"{base}/v1/audit/proof/inclusion",
                       params={"index": receipt.leaf_index, "size": size, "log": receipt.log_id})
    if proof.status_code != 200:
        raise _fail("the inclusion proof could not be fetched")
    statement = verify_receipt(receipt, envelope.content, note.text, proof.json(), vkey)
    if commitment_key is not None and request_body is not None:
        expected = "hmac-sha256:" + hmac.new(commitment_key, request_body, hashlib.sha256).hexdigest()
        if statement["predicate"]["commitments"].get("request") != expected:
            raise _fail("the record does not commit to the request this client sent")
    return VerifiedReceipt(receipt, statement, size)
