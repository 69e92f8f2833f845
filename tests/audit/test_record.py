"""Records: the closed schema, immutability, canonical JSON, DSSE envelopes, commitments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import PREDICATE_TYPE, InvalidRecord, RecordBuilder, VerificationError, commit
from audit._dsse import PAYLOAD_TYPE, open_envelope, pae, seal_envelope
from tests.audit.conftest import make_record

EXAMPLES = int(os.environ.get("SEALGATE_HYPOTHESIS_EXAMPLES", "60"))
C = commit(b"k" * 32, b"x")


def _base() -> RecordBuilder:
    return RecordBuilder("intent").set(tenant="t1", request_id="r1", endpoint="/v1/chat/completions",
                                       decision="allow", channel="sealed", request_commitment=C)


def test_commit_is_hmac_sha256() -> None:
    want = hmac.new(b"k" * 32, b"data", hashlib.sha256).hexdigest()
    assert commit(b"k" * 32, b"data") == f"hmac-sha256:{want}"
    with pytest.raises(InvalidRecord):
        commit(b"short", b"data")


def test_statement_shape() -> None:
    statement = make_record(3).statement()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    request = statement["predicate"]["commitments"]["request"]
    assert request.startswith("hmac-sha256:")
    assert statement["subject"] == [
        {"name": "request", "digest": {"hmac-sha256": request.removeprefix("hmac-sha256:")}}
    ]
    assert statement["predicate"]["kind"] == "intent"


def test_builder_is_immutable_and_rejects_setting_twice() -> None:
    first = _base()
    second = first.set(model="m")
    assert "model" not in first.build().fields and second.build()["model"] == "m"
    with pytest.raises(InvalidRecord, match="already set"):
        second.set(model="other")
    with pytest.raises(InvalidRecord, match="already set"):
        first.set(kind="completion")
    with pytest.raises(TypeError):
        first.build().fields["model"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "hello"),  # unknown field: there is no place for content
        ("messages", []),
        ("model", "ignore previous instructions and"),  # free text in an identifier
        ("tenant", "a" * 129),
        ("request_id", "x\ny"),
        ("endpoint", ""),
        ("decision", "maybe"),
        ("channel", "open"),
        ("prompt_tokens", -1),
        ("prompt_tokens", True),
        ("latency_ms", float("nan")),
        ("status", 99),
        ("stream", "yes"),
        ("rule_ids", ["ok", "not ok"]),
        ("rule_ids", ["r"] * 33),
        ("policy_bundle_digest", "md5:abc"),
        ("response_commitment", "plain text"),
        ("time", "yesterday"),
        # a "$" anchor would accept a trailing newline
        ("time", "2024-01-01T00:00:00Z\n"),
        ("time", "\u0662\u0660\u0662\u0664-01-01T00:00:00Z"),  # digits, but not ASCII ones
        ("time", "2024-13-45T99:99:99Z"),  # the right form, no instant
        ("model", "smollm2\n"),
        ("policy_bundle_digest", "sha256:" + "ab" * 32 + "\n"),
        ("response_commitment", "hmac-sha256:" + "0" * 64 + "\n"),
    ],
)
def test_invalid_fields_are_rejected(field: str, value: object) -> None:
    with pytest.raises(InvalidRecord) as info:
        _base().set(**{field: value})
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(info.value)  # errors never echo values


def test_missing_fields_and_incoherent_kind() -> None:
    with pytest.raises(InvalidRecord, match="missing"):
        RecordBuilder("intent").set(tenant="t").build()
    with pytest.raises(InvalidRecord):
        RecordBuilder("denial").set(tenant="t", request_id="r", endpoint="/e", decision="allow",
                                    channel="sealed", request_commitment=C).build()
    with pytest.raises(InvalidRecord):
        RecordBuilder("gossip")


ident = st.text("abcXYZ019._:/@+-", min_size=1, max_size=20)
fields = st.fixed_dictionaries(
    {},
    optional={
        "model": ident, "backend": ident, "rule_ids": st.lists(ident, max_size=4),
        "prompt_tokens": st.integers(0, 2**53 - 1), "status": st.integers(100, 599),
        "latency_ms": st.floats(0, 1e9, allow_nan=False), "stream": st.booleans(),
        "response_commitment": st.binary().map(lambda b: commit(b"k" * 16, b)),
    },
)  # fmt: skip


def _assert_canonical(tenant: str = "t", **extra: object) -> None:
    """A completion record with ``extra`` fields is canonicalized as ``rfc8785`` does it."""
    record = (
        RecordBuilder("completion")
        .set(tenant=tenant, request_id="r", endpoint="/e", decision="allow", channel="plaintext",
             request_commitment=C, **extra)
        .build()
    )  # fmt: skip
    assert record.canonical() == rfc8785.dumps(record.statement())


@settings(max_examples=EXAMPLES, deadline=None)
@given(fields, ident)
def test_canonical_json_is_rfc8785(extra: dict, tenant: str) -> None:
    _assert_canonical(tenant, **extra)


@pytest.mark.parametrize("exponent", range(-3, 10))
def test_latencies_of_every_magnitude_are_canonical(exponent: int) -> None:
    # Numbers are where JSON encoders differ (exponents, digits): one value per decade of the
    # admitted range, with the most digits a latency keeps.
    for latency in (10.0**exponent * 1.234, 10.0**exponent * 9.876543, 10.0**exponent + 0.001):
        _assert_canonical(latency_ms=min(latency, 1e9))


def test_pae_matches_dsse_spec_example() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    want = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("http://example.com/HelloWorld", b"hello world") == want


def test_envelope_is_canonical_and_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    payload = make_record().canonical()
    envelope, sig = seal_envelope(payload, key, "0a1b2c3d")
    assert envelope == rfc8785.dumps(json.loads(envelope))
    obj = json.loads(envelope)
    assert obj["payloadType"] == PAYLOAD_TYPE and base64.b64decode(obj["payload"]) == payload
    statement, got = open_envelope(envelope, key.public_key(), "0a1b2c3d")
    assert got == sig and statement["predicateType"] == PREDICATE_TYPE


def test_envelope_wrong_key_bit_flip_truncated() -> None:
    key = Ed25519PrivateKey.generate()
    envelope, _ = seal_envelope(make_record().canonical(), key, "0a1b2c3d")
    with pytest.raises(VerificationError):
        open_envelope(envelope, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(VerificationError):
        open_envelope(envelope, key.public_key(), "ffffffff")
    obj = json.loads(envelope)
    payload = bytearray(base64.b64decode(obj["payload"]))
    payload[40] ^= 1
    obj["payload"] = base64.b64encode(payload).decode()
    with pytest.raises(VerificationError):
        open_envelope(json.dumps(obj).encode(), key.public_key())
    with pytest.raises(VerificationError):
        open_envelope(envelope[:-10], key.public_key())
