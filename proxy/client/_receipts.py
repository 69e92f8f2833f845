"""Client-side receipt checks: the records behind a response are signed by the attested log
key, included in a signed checkpoint, and commit to exactly the bytes this client sent and
received."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import AuditError, Receipt, verify_receipt, vkey_for
from proxy.client._errors import SealedTransportError

__all__ = ["VerifiedReceipt", "verify_request_records", "verify_response_receipt"]


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt that checked out: its statement and the checkpoint size it is included in."""

    receipt: Receipt
    statement: dict[str, Any]
    checkpoint_size: int


def _fail(detail: str) -> SealedTransportError:
    return SealedTransportError("receipt_invalid", detail)


@contextmanager
def _checked() -> Iterator[None]:
    """Failed audit checks and malformed audit answers (the server's, so anything) are both
    ``receipt_invalid``, as docs/protocol.md promises; ``SealedTransportError`` passes through."""
    try:
        yield
    except AuditError as exc:
        raise _fail(exc.detail) from exc
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise _fail("the audit routes answered something malformed") from exc


def _sealed_only(client: httpx2.Client, base: str, allow_plaintext: bool) -> None:
    """The helpers send the tenant's API key: only through the sealed channel, unless the
    caller says the gateway is a development one (``allow_plaintext``). A plain client would
    hand the key to the ingress and every hop before the enclave."""
    if allow_plaintext:
        return
    from ._transport import SealedTransport

    find = getattr(client, "_transport_for_url", None)
    transport = find(httpx2.URL(base)) if callable(find) else getattr(client, "_transport", None)
    if not isinstance(transport, SealedTransport):
        raise SealedTransportError(
            "request_invalid", "receipts are fetched with the tenant's API key, which only a "
            "SealedTransport carries: pass a client built on one (allow_plaintext=True for a "
            "development gateway that serves plain HTTP)")


def _commitment(key: bytes, data: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


def _included(client: httpx2.Client, base: str, receipt: Receipt, envelope: bytes,
              audit_public_key: bytes, api_key: str) -> VerifiedReceipt:
    """Checkpoint and inclusion proof of the receipt's log (any replica serves every log).
    They are public, but fetched with the tenant's key: through the sealed channel, a request
    without a valid key counts against the share of the gateway's replay set that everyone
    without one shares (docs/protocol.md), which anyone can use up."""
    auth = {"Authorization": f"Bearer {api_key}"}
    note = client.get(f"{base}/v1/audit/checkpoint", params={"log": receipt.log_id}, headers=auth)
    if note.status_code != 200:
        raise _fail("the checkpoint could not be fetched")
    with _checked():
        origin, size_line = note.text.split("\n")[:2]
        vkey = vkey_for(origin, Ed25519PublicKey.from_public_bytes(audit_public_key))
        size = int(size_line)
    if receipt.leaf_index >= size:
        raise _fail("the record is not yet in a published checkpoint")
    proof = client.get(f"{base}/v1/audit/proof/inclusion", headers=auth,
                       params={"index": receipt.leaf_index, "size": size, "log": receipt.log_id})
    if proof.status_code != 200:
        raise _fail("the inclusion proof could not be fetched")
    with _checked():
        statement = verify_receipt(receipt, envelope, note.text, proof.json(), vkey)
    return VerifiedReceipt(receipt, statement, size)


def verify_response_receipt(client: httpx2.Client, base_url: str, header: str,
                            audit_public_key: bytes, *, api_key: str,
                            commitment_key: bytes | None = None,
                            request_body: bytes | None = None,
                            allow_plaintext: bool = False) -> VerifiedReceipt:
    """Check a ``sealgate-receipt`` header: record, signature, inclusion, request commitment.

    ``audit_public_key`` is the Ed25519 key from the *verified* identity document, so a log
    key the enclave did not attest to is refused. ``client`` must be built on a
    :class:`SealedTransport` (the API key goes with each request) unless ``allow_plaintext``.
    """
    with _checked():
        receipt = Receipt.parse(header)
    base = base_url.rstrip("/")
    _sealed_only(client, base, allow_plaintext)
    envelope = client.get(f"{base}/v1/audit/records/{receipt.record_id}",
                          headers={"Authorization": f"Bearer {api_key}"})
    if envelope.status_code != 200:
        raise _fail("the record could not be fetched")
    verified = _included(client, base, receipt, envelope.content, audit_public_key, api_key)
    if commitment_key is not None and request_body is not None:
        with _checked():
            committed = verified.statement["predicate"]["commitments"].get("request")
        if committed != _commitment(commitment_key, request_body):
            raise _fail("the record does not commit to the request this client sent")
    return verified


def verify_request_records(client: httpx2.Client, base_url: str, request_id: str,
                           audit_public_key: bytes, *, api_key: str, commitment_key: bytes,
                           request_body: bytes, response_body: bytes | None = None,
                           allow_plaintext: bool = False) -> list[VerifiedReceipt]:
    """All records of one request (found by its ``x-request-id``): each signed and included,
    each committing to ``request_body``, and the completion record to ``response_body``. With
    ``response_body``, a listing without a completion record fails (a gateway leaving it out
    would skip that check); so does an empty one. The completion record is appended after the
    answer, so a caller may retry a while on these "not yet" failures. ``client`` as for
    :func:`verify_response_receipt`."""
    base = base_url.rstrip("/")
    _sealed_only(client, base, allow_plaintext)
    found = client.get(f"{base}/v1/audit/requests/{request_id}",
                       headers={"Authorization": f"Bearer {api_key}"})
    if found.status_code != 200:
        raise _fail("the request's records could not be fetched")
    verified, kinds = [], set()
    with _checked():
        items = list(found.json()["records"])
    for item in items:
        with _checked():
            envelope = item["envelope"].encode()
            sig = json.loads(envelope)["signatures"][0]["sig"]
            receipt = Receipt(item["record_id"], int(item["leaf"]), sig, item["log"])
        checked = _included(client, base, receipt, envelope, audit_public_key, api_key)
        with _checked():
            kind = checked.statement["predicate"]["kind"]
            commitments = dict(checked.statement["predicate"]["commitments"])
        if commitments.get("request") != _commitment(commitment_key, request_body):
            raise _fail("a record does not commit to the request this client sent")
        if (kind == "completion" and response_body is not None
                and commitments.get("response") != _commitment(commitment_key, response_body)):
            raise _fail("the completion record does not commit to the response received")
        verified.append(checked)
        kinds.add(kind)
    if not verified:
        raise _fail("no record of the request is published yet")
    if response_body is not None and "completion" not in kinds:
        raise _fail("the completion record is not published yet")
    return verified
