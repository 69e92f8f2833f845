"""Sealed sessions end to end against a real gateway that refuses plaintext: the official SDK
through SealedTransport and through ``sealgate client-proxy``, attestation pinning, receipts,
and a socket-level capture that shows no plaintext."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import openai
import pytest

from proxy.attestation import VerificationPolicy
from proxy.client import (
    AttestedKeySource,
    SealedTransport,
    SealedTransportError,
    verify_request_records,
    verify_response_receipt,
)
from tests.integration.conftest import MODEL, gateway_config, request_counts, request_log
from tests.ohttp._apps import RecordingTCPRelay
from tests.server import ROOT, Gateway, Proc, free_port, start_gateway, wait_http

MEASUREMENT = "5e" * 48
OTHER = "a1" * 48


@pytest.fixture(scope="session")
def sealed_gateway(workdir: Path, fast_upstream: Proc) -> Iterator[Gateway]:
    config = gateway_config(fast_upstream.port, allow_plaintext=False)
    config = f'release_measurement = "{MEASUREMENT}"\ncheckpoint_every_ms = 200\n' + config
    gw = start_gateway(workdir, config)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def sealed_key(sealed_gateway: Gateway) -> str:
    return sealed_gateway.new_key("acme")


def pinned(measurement: str = MEASUREMENT, *, allow_simulated: bool = True) -> VerificationPolicy:
    return VerificationPolicy(allowed_measurements=frozenset({measurement}),
                              allow_simulated=allow_simulated)


def sealed_client(gw: Gateway, key: str, policy: VerificationPolicy,
                  port: int | None = None) -> tuple[openai.OpenAI, AttestedKeySource]:
    base = f"http://127.0.0.1:{port or gw.port}"
    source = AttestedKeySource(base, policy)
    transport = SealedTransport(gateway_url=f"{base}/.well-known/ohttp-gateway", key_source=source)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0,
                           http_client=httpx2.Client(transport=transport, timeout=60))
    return client, source


def _sealed_http(gw: Gateway, source: AttestedKeySource) -> httpx2.Client:
    """An HTTP client that seals every request to the verified key (no API key of its own)."""
    transport = SealedTransport(gateway_url=f"{gw.url}/.well-known/ohttp-gateway", key_source=source)
    return httpx2.Client(transport=transport, timeout=10)


def test_plaintext_is_refused_for_content(sealed_gateway: Gateway, sealed_key: str) -> None:
    auth = {"Authorization": f"Bearer {sealed_key}"}
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("POST", "/v1/completions"), ("POST", "/v1/embeddings")):
        before = request_counts(sealed_gateway).get((path, "none", "plaintext", 403), 0)
        response = httpx.request(method, f"{sealed_gateway.url}{path}", headers=auth,
                                 json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "sealed_channel_required"
        # Refused before authentication, and still one log line and one count.
        line, = request_log(sealed_gateway, response.headers["x-request-id"])
        assert line["reason"] == "sealed_channel_required" and line["tenant"] is None
        assert request_counts(sealed_gateway)[(path, "none", "plaintext", 403)] == before + 1


def test_content_free_endpoints_stay_plain(sealed_gateway: Gateway) -> None:
    for path in ("/healthz", "/.well-known/ohttp-gateway", "/.well-known/sealgate/identity",
                 "/v1/audit/checkpoint"):
        assert httpx.get(f"{sealed_gateway.url}{path}").status_code == 200, path
    note = httpx.get(f"{sealed_gateway.url}/v1/audit/checkpoint")
    assert note.headers["content-type"] == "text/plain; charset=utf-8"  # as docs/protocol.md


def test_sdk_through_sealed_transport(sealed_gateway: Gateway, sealed_key: str) -> None:
    client, _ = sealed_client(sealed_gateway, sealed_key, pinned())
    assert MODEL in [m.id for m in client.models.list().data]
    chat = client.chat.completions.create(model=MODEL, max_tokens=8,
                                          messages=[{"role": "user", "content": "Say hello"}])
    assert chat.choices[0].message.content
    chunks = list(client.chat.completions.create(
        model=MODEL, max_tokens=8, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    assert client.completions.create(model=MODEL, prompt="Once", max_tokens=4).choices[0].text
    assert len(client.embeddings.create(model=MODEL, input="hi").data[0].embedding) > 16


def test_receipt_verifies_against_checkpoint(sealed_gateway: Gateway, sealed_key: str) -> None:
    client, source = sealed_client(sealed_gateway, sealed_key, pinned())
    raw = client.chat.completions.with_raw_response.create(
        model="fast-echo", messages=[{"role": "user", "content": "receipt please"}])
    header = raw.headers["sealgate-receipt"]
    exchange = raw.http_response.extensions["sealgate"]
    deadline = time.monotonic() + 10
    # The record is fetched with the tenant's key: through the sealed channel too.
    plain = httpx2.get(f"{sealed_gateway.url}/v1/audit/records/x",
                       headers={"Authorization": f"Bearer {sealed_key}"})
    assert plain.status_code == 403 and plain.json()["error"]["code"] == "sealed_channel_required"
    with _sealed_http(sealed_gateway, source) as sealed:
        while True:
            try:
                verified = verify_response_receipt(
                    sealed, sealed_gateway.url, header, source.verified.audit_public_key,
                    api_key=sealed_key, commitment_key=exchange.commitment_key,
                    request_body=exchange.request_body)
                break
            except SealedTransportError as exc:  # not yet in a published checkpoint
                if "not yet" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    predicate = verified.statement["predicate"]
    assert predicate["kind"] == "intent" and predicate["channel"] == "sealed"
    assert predicate["decision"] == "allow" and predicate["model"] == "fast-echo"


def test_pinned_measurement_mismatch_refuses_to_send(sealed_gateway: Gateway, sealed_key: str) -> None:
    for policy in (pinned(OTHER), pinned(allow_simulated=False)):
        client, _ = sealed_client(sealed_gateway, sealed_key, policy)
        with pytest.raises(SealedTransportError) as info:
            client.models.list()
        assert info.value.code == "enclave_unverified"


def test_identity_that_does_not_bind_its_keys_is_refused(sealed_gateway: Gateway, sealed_key: str,
                                                         workdir: Path) -> None:
    """A server that swaps the key configs in its identity document (e.g. a relay that wants
    to read traffic) is refused: REPORT_DATA no longer matches."""
    from proxy.attestation import verify_identity
    from proxy.gateway import KeyManager

    document = httpx.get(f"{sealed_gateway.url}/.well-known/sealgate/identity").json()
    import base64

    document["key_configs"] = base64.b64encode(KeyManager().key_configs()).decode()
    with pytest.raises(Exception) as info:
        verify_identity(document, pinned())
    assert getattr(info.value, "code", "") == "report_data_mismatch"


def test_no_plaintext_on_the_wire(sealed_gateway: Gateway, sealed_key: str) -> None:
    canary = "CANARY-WIRE-" + str(time.time_ns())
    with RecordingTCPRelay(sealed_gateway.port) as relay:
        client, _ = sealed_client(sealed_gateway, sealed_key, pinned(), port=relay.port)
        client.chat.completions.create(model="fast-echo", messages=[{"role": "user", "content": canary}])
        list(client.chat.completions.create(model="fast-echo", stream=True,
                                            messages=[{"role": "user", "content": canary}]))
        sent = bytes(relay.sent)
    assert b"ohttp" in sent  # the traffic went through the relay
    for needle in (canary.encode(), sealed_key.encode(), b"chat/completions", b'"messages"'):
        assert needle not in sent


def test_sdk_through_client_proxy(sealed_gateway: Gateway, sealed_key: str, workdir: Path) -> None:
    policy_file = workdir / "verify-policy.json"
    policy_file.write_text(json.dumps({"allowed_measurements": [MEASUREMENT], "allow_simulated": True}))
    port = free_port()
    log = workdir / "client-proxy.log"
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "client-proxy", "--gateway",
                             sealed_gateway.url, "--listen", f"127.0.0.1:{port}", "--policy",
                             str(policy_file)], cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 30, proc)
        said = log.read_text()
        assert f"listening on http://127.0.0.1:{port}/v1" in said  # once it does
        assert f"enclave verified: simulated, measurement {MEASUREMENT}" in said  # checked first
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=sealed_key,
                               max_retries=0)
        assert MODEL in [m.id for m in client.models.list().data]
        chat = client.chat.completions.create(
            model=MODEL, max_tokens=6, messages=[{"role": "user", "content": "Hi"}])
        assert chat.choices[0].message.content
        chunks = list(client.chat.completions.create(
            model=MODEL, max_tokens=6, stream=True, messages=[{"role": "user", "content": "Hi"}]))
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
        assert client.completions.create(model=MODEL, prompt="A", max_tokens=3).choices[0].text
        assert client.embeddings.create(model=MODEL, input="x").data[0].embedding
    finally:
        proc.terminate()
        proc.wait(10)


def test_client_verifies_both_records_of_a_streamed_request(sealed_gateway: Gateway,
                                                            sealed_key: str) -> None:
    """Intent and completion records of a sealed streaming request: signed by the attested
    log key, included in a checkpoint, committing to the exact request and response bytes."""
    _, source = sealed_client(sealed_gateway, sealed_key, pinned())
    base = f"http://127.0.0.1:{sealed_gateway.port}"
    transport = SealedTransport(gateway_url=f"{base}/.well-known/ohttp-gateway", key_source=source)
    body = {"model": "fast-echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(transport=transport, timeout=30) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {sealed_key}"}) as response:
            received = response.read()
            exchange = response.extensions["sealgate"]
            request_id = response.headers["x-request-id"]
    assert received.endswith(b"data: [DONE]\n\n")
    deadline = time.monotonic() + 15
    with _sealed_http(sealed_gateway, source) as sealed:
        while True:
            try:
                records = verify_request_records(
                    sealed, base, request_id, source.verified.audit_public_key, api_key=sealed_key,
                    commitment_key=exchange.commitment_key, request_body=exchange.request_body,
                    response_body=received)
                if len(records) == 2:
                    break
            except SealedTransportError as exc:
                if time.monotonic() > deadline or ("not yet" not in str(exc) and "fetched" not in str(exc)):
                    raise
            assert time.monotonic() < deadline
            time.sleep(0.2)
    kinds = [r.statement["predicate"]["kind"] for r in records]
    assert kinds == ["intent", "completion"]
    assert records[1].statement["predicate"]["status"] == 200
    with pytest.raises(SealedTransportError, match="response"), \
            _sealed_http(sealed_gateway, source) as sealed:
        verify_request_records(sealed, base, request_id,
                               source.verified.audit_public_key, api_key=sealed_key,
                               commitment_key=exchange.commitment_key,
                               request_body=exchange.request_body, response_body=received + b" ")
