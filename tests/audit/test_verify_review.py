"""Verification on crafted input: every failure is the documented error, never a raw exception."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text

from audit import (
    AuditLog,
    InvalidRecord,
    LogStore,
    RecordBuilder,
    SignedCheckpoint,
    VerificationError,
    verify_log,
    vkey_for,
)
from audit._dsse import open_envelope
from proxy.client import verify_request_records, verify_response_receipt
from proxy.client._errors import SealedTransportError
from tests.audit.conftest import ORIGIN, make_record

DEEP = b"[" * 100_000


def test_deeply_nested_envelope_is_malformed() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    for envelope in (DEEP, b'{"payload":"","signatures":' + DEEP + b"}"):
        with pytest.raises(VerificationError, match="malformed envelope"):
            open_envelope(envelope, key)


def test_verify_log_reports_a_deeply_nested_stored_envelope(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"

    async def build() -> str:
        log = await AuditLog.open(url, Ed25519PrivateKey.generate(), ORIGIN)
        for i in range(3):
            await log.append(make_record(i))
        await log.close()
        return log.vkey

    vkey = asyncio.run(build())
    store = LogStore.open(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET envelope = :e WHERE leaf_index = 1"),
                     {"e": DEEP})  # fmt: skip
    with pytest.raises(VerificationError, match="leaf 1: malformed envelope"):
        verify_log(store, vkey=vkey)
    store.close()


def test_note_with_a_lone_surrogate_is_malformed() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = SignedCheckpoint.sign(ORIGIN, 1, b"\x00" * 32, key)
    vkey = vkey_for(ORIGIN, key.public_key())
    note = checkpoint.note.replace("\n", "\n\ud800", 1)  # e.g. a JSON "\ud800" escape
    with pytest.raises(VerificationError, match="malformed note"):
        SignedCheckpoint.parse(note, vkey)


def test_huge_integer_latency_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="latency"):
        RecordBuilder("intent").set(latency_ms=10**400)


@dataclass(frozen=True)
class Served:
    """What the audit routes answer for one receipt (leaf 2 of a 5-record log)."""

    header: str
    note: str
    envelope: bytes
    proof: dict[str, Any]
    listing: dict[str, Any]
    public_key: bytes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    url = f"sqlite:///{tmp_path_factory.mktemp('receipts') / 'audit.db'}"
    key = Ed25519PrivateKey.generate()

    async def build() -> Served:
        log = await AuditLog.open(url, key, ORIGIN)
        receipts = [await log.append(make_record(i)) for i in range(5)]
        checkpoint = await log.publish()
        envelope = await log.get_record(receipts[2].record_id)
        proof = (await log.inclusion_proof(2, checkpoint.size)).to_json()
        listing = {"request_id": "req-2",
                   "records": await log.request_records("tenant-a", "req-2")}  # fmt: skip
        await log.close()
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Served(receipts[2].to_header(), checkpoint.note, envelope, proof, listing, raw)

    return asyncio.run(build())


def _client(s: Served, **answers: Any) -> httpx2.Client:
    """A gateway whose audit routes answer ``answers`` (bytes or JSON) instead of the truth."""
    truth = {"record": s.envelope, "checkpoint": s.note.encode(), "proof": s.proof,
             "listing": s.listing}  # fmt: skip
    truth.update(answers)

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        name = ("record" if path.startswith("/v1/audit/records/") else "checkpoint"
                if path == "/v1/audit/checkpoint" else "proof"
                if path == "/v1/audit/proof/inclusion" else "listing")  # fmt: skip
        body = truth[name]
        return httpx2.Response(200, content=body if isinstance(body, bytes) else
                               json.dumps(body).encode())  # fmt: skip

    return httpx2.Client(transport=httpx2.MockTransport(handler))


CRAFTED: dict[str, Callable[[Served], dict[str, Any]]] = {
    "tampered envelope": lambda s: {"record": s.envelope.replace(b'"sig":"', b'"sig":"A', 1)},
    "deeply nested envelope": lambda s: {"record": DEEP},
    "one-line checkpoint": lambda s: {"checkpoint": b"garbage"},
    "checkpoint origin with a space": lambda s: {"checkpoint": b"a b\n5\nx\n\n\xe2\x80\x94 a x\n"},
    "checkpoint size not a number": lambda s: {"checkpoint": s.note.replace("\n5\n", "\nfive\n")
                                               .encode()},
    "proof not JSON": lambda s: {"proof": b"<html>"},
    "proof of another leaf": lambda s: {"proof": {**s.proof, "index": 3}},
    "proof hashes reordered": lambda s: {"proof": {**s.proof, "hashes": s.proof["hashes"][::-1]}},
}  # fmt: skip


def test_served_receipt_verifies(served: Served) -> None:
    verified = verify_response_receipt(_client(served), "https://gw", served.header,
                                       served.public_key, allow_plaintext=True, api_key="k")  # fmt: skip
    assert verified.checkpoint_size == 5 and verified.receipt.leaf_index == 2


@pytest.mark.parametrize("what", list(CRAFTED))
def test_response_receipt_failures_are_receipt_invalid(served: Served, what: str) -> None:
    """docs/protocol.md: failures raise ``SealedTransportError`` code ``receipt_invalid``."""
    client = _client(served, **CRAFTED[what](served))
    with pytest.raises(SealedTransportError) as info:
        verify_response_receipt(client, "https://gw", served.header, served.public_key,
                                allow_plaintext=True, api_key="k")  # fmt: skip
    assert info.value.code == "receipt_invalid"


def test_malformed_receipt_header_is_receipt_invalid(served: Served) -> None:
    with pytest.raises(SealedTransportError) as info:
        verify_response_receipt(_client(served), "https://gw", "garbage", served.public_key,
                                allow_plaintext=True, api_key="k")  # fmt: skip
    assert info.value.code == "receipt_invalid"


@pytest.mark.parametrize("listing", [
    {"records": [{"envelope": "{}"}]},
    {"records": [{"record_id": "x", "leaf": "two", "log": "x", "envelope": "[]"}]},
    {"records": None},
    [],
])  # fmt: skip
def test_malformed_request_listing_is_receipt_invalid(served: Served, listing: Any) -> None:
    with pytest.raises(SealedTransportError) as info:
        verify_request_records(_client(served, listing=listing), "https://gw", "req-2",
                               served.public_key, allow_plaintext=True, api_key="k", commitment_key=b"k" * 32,
                               request_body=b"in2")  # fmt: skip
    assert info.value.code == "receipt_invalid"


def test_request_listing_verifies(served: Served) -> None:
    records = verify_request_records(_client(served), "https://gw", "req-2", served.public_key,
                                     allow_plaintext=True, api_key="k", commitment_key=b"k" * 32,
                                     request_body=b"in2")  # fmt: skip
    assert [r.receipt.leaf_index for r in records] == [2]


@pytest.mark.parametrize(("listing", "response_body"), [
    ({"records": []}, None),  # no record at all verifies nothing
    (None, b"out2"),  # the listing holds the intent only: the response check would be skipped
])  # fmt: skip
def test_request_listing_without_the_records_asked_for_is_refused(
        served: Served, listing: Any, response_body: bytes | None) -> None:
    answers = {} if listing is None else {"listing": listing}
    with pytest.raises(SealedTransportError, match="published yet") as info:
        verify_request_records(_client(served, **answers), "https://gw", "req-2",
                               served.public_key, allow_plaintext=True, api_key="k", commitment_key=b"k" * 32,
                               request_body=b"in2", response_body=response_body)  # fmt: skip
    assert info.value.code == "receipt_invalid"


def test_the_helpers_send_the_api_key_only_through_the_sealed_channel(served: Served) -> None:
    """A plain client would hand the tenant's key to the ingress and every hop before the
    enclave: refused before anything is sent, unless the gateway is said to be a plain
    development one."""
    sent: list[httpx2.Request] = []
    plain = httpx2.Client(transport=httpx2.MockTransport(lambda r: sent.append(r) or httpx2.Response(500)))
    for call in (lambda: verify_response_receipt(plain, "https://gw", served.header, served.public_key,
                                                 api_key="k"),
                 lambda: verify_request_records(plain, "https://gw", "req-2", served.public_key,
                                                api_key="k", commitment_key=b"k" * 32,
                                                request_body=b"in2")):
        with pytest.raises(SealedTransportError) as info:
            call()
        assert info.value.code == "request_invalid" and "SealedTransport" in info.value.detail
    assert sent == []
