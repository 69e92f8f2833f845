"""Real uvicorn on loopback: sealed JSON and streaming with the unmodified OpenAI SDK,
chunk-by-chunk delivery, disconnect propagation, attested keys, and the client proxy."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest

from proxy.client import (
    AsyncSealedTransport,
    AttestedKeySource,
    ClientProxy,
    SealedTransport,
    SealedTransportError,
    StaticKeySource,
)
from proxy.client._forwarder import server_config
from proxy.gateway import GATEWAY_PATH
from tests.ohttp._apps import AppState, RecordingTCPRelay, build_app, serve, wait_for
from tests.server import free_port

pytestmark = pytest.mark.timeout(60)
CANARY = "canary-7f3a9c prompt that must never cross the wire in clear"


@pytest.fixture
def gateway() -> Iterator[tuple[AppState, int]]:
    state = AppState()
    with serve(build_app(state)) as port:
        yield state, port


def _transport(state: AppState, port: int) -> SealedTransport:
    url = f"http://127.0.0.1:{port}{GATEWAY_PATH}"
    return SealedTransport(gateway_url=url, key_source=StaticKeySource(state.keys.key_configs()))


def _openai(base_url: str, transport: httpx2.BaseTransport | None = None) -> openai.OpenAI:
    http_client = httpx2.Client(transport=transport) if transport else httpx2.Client()
    return openai.OpenAI(base_url=base_url, api_key="sk-test", http_client=http_client, max_retries=0)


def test_openai_sdk_over_sealed_transport(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    client = _openai(f"http://127.0.0.1:{port}/v1", _transport(state, port))
    messages = [{"role": "user", "content": CANARY}]
    completion = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == CANARY[::-1]
    stream = client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text.strip() == CANARY[::-1]
    assert state.requests == [True, True]


def _stream_sse(client: httpx2.Client, port: int) -> Any:
    return client.stream("POST", f"http://127.0.0.1:{port}/sse", json={"stream": True})


def _sse(response: httpx2.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


def test_stream_is_delivered_chunk_by_chunk(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    with httpx2.Client(transport=_transport(state, port)) as client:
        with _stream_sse(client, port) as response:
            assert response.status_code == 200
            assert response.extensions["sealgate"].chunked is True
            events = _sse(response)
            first = next(events)
            # The route holds the rest back until we have seen the first event: only
            # chunk-by-chunk sealing and delivery lets this finish without the timeout event.
            state.release.set()
            rest = [next(events) for _ in range(3)]
    assert first == {"n": 0, "sealed": True}
    assert [e["n"] for e in rest] == [1, 2, 3]


def test_client_disconnect_cancels_inner_generation(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    state.release.set()
    with httpx2.Client(transport=_transport(state, port)) as client:
        with _stream_sse(client, port) as response:
            events = _sse(response)
            assert next(events)["n"] == 0
            assert next(events)["n"] == 1
    # The route's generator runs ~3 s more unless cancelled; it must close without completing.
    assert wait_for(lambda: "closed" in state.stream_events, 2.5)
    assert "completed" not in state.stream_events


def test_truncated_stream_is_an_error_not_a_short_answer(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    state.release.set()
    transport = _transport(state, port)
    inner = FaultInjectingTruncatingTransport(httpx2.HTTPTransport(), keep=3)
    transport._inner = inner  # measurement hook: cut the ciphertext stream short
    with httpx2.Client(transport=transport) as client:
        with _stream_sse(client, port) as response:
            with pytest.raises(SealedTransportError) as err:
                list(_sse(response))
    assert err.value.code == "response_invalid"


class FaultInjectingTruncatingTransport(httpx2.BaseTransport):
    """Passes requests through but keeps only the first ``keep`` pieces of a streamed answer."""

    def __init__(self, inner: httpx2.BaseTransport, keep: int) -> None:
        self.inner, self.keep = inner, keep

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        keep, stream = self.keep, response.stream

        class Cut(httpx2.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for i, piece in enumerate(stream):  # type: ignore[arg-type]
                    if i >= keep:
                        return
                    yield piece

            def close(self) -> None:
                stream.close()  # type: ignore[union-attr]

        return httpx2.Response(response.status_code, headers=response.headers, stream=Cut())


@dataclass
class _Verified:
    key_configs: bytes


def _identity_app(state: AppState, calls: list[str]) -> Any:
    """The gateway app plus an identity route that signs nothing: a test document the test's
    own verify function checks (nonce echo and key configs)."""
    from litestar import post

    app = build_app(state)

    @post("/.well-known/sealgate/identity", status_code=200)
    async def identity(data: dict[str, Any]) -> dict[str, Any]:
        calls.append("identity")
        keys = base64.b64encode(state.keys.key_configs()).decode()
        return {"version": 1, "nonce": data["nonce"], "key_configs": keys}

    app.register(identity)
    return app


def _verify(document: Mapping[str, Any], policy: Any, *, nonce: bytes | None = None) -> _Verified:
    if policy != "test-policy" or base64.b64decode(document["nonce"]) != nonce:
        raise ValueError("nonce mismatch")
    return _Verified(base64.b64decode(document["key_configs"]))


def test_attested_key_source_and_no_silent_downgrade() -> None:
    state, calls = AppState(), []
    with serve(_identity_app(state, calls)) as port:
        base = f"http://127.0.0.1:{port}"
        good = AttestedKeySource(base, "test-policy", _verify)
        transport = SealedTransport(gateway_url=base + GATEWAY_PATH, key_source=good)
        with httpx2.Client(transport=transport) as client:
            assert client.post(base + "/echo", json={"a": 1}).json()["sealed"] is True
            assert client.post(base + "/echo", json={"a": 2}).json()["sealed"] is True
        assert calls == ["identity"]  # cached for its lifetime

        def refuse(document: Mapping[str, Any], policy: Any, *, nonce: bytes | None = None) -> Any:
            raise ValueError("measurement not allowed")

        bad = AttestedKeySource(base, "test-policy", refuse)
        transport = SealedTransport(gateway_url=base + GATEWAY_PATH, key_source=bad)
        with httpx2.Client(transport=transport) as client:
            with pytest.raises(SealedTransportError) as err:
                client.post(base + "/echo", json={"prompt": CANARY})
        assert err.value.code == "enclave_unverified"
        assert state.requests == [True, True]  # nothing was sent for the refused identity
        unreachable = AttestedKeySource("http://127.0.0.1:9", "test-policy", _verify, timeout=1)
        with pytest.raises(SealedTransportError, match=r"^enclave_unverified: "):
            unreachable.key_config()


@pytest.fixture
def client_proxy(gateway: tuple[AppState, int]) -> Iterator[tuple[AppState, int, RecordingTCPRelay]]:
    state, port = gateway
    with RecordingTCPRelay(port) as relay:
        origin = f"http://127.0.0.1:{relay.port}"
        transport = AsyncSealedTransport(
            gateway_url=origin + GATEWAY_PATH,
            key_source=StaticKeySource(state.keys.key_configs()),
        )
        with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
            yield state, proxy_port, relay


def test_openai_sdk_through_client_proxy_leaks_no_plaintext(
    client_proxy: tuple[AppState, int, RecordingTCPRelay],
) -> None:
    state, proxy_port, relay = client_proxy
    client = _openai(f"http://127.0.0.1:{proxy_port}/v1")
    messages = [{"role": "user", "content": CANARY}]
    completion = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == CANARY[::-1]
    stream = client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in stream).strip() == CANARY[::-1]
    assert state.requests == [True, True]
    wire = bytes(relay.sent)
    assert len(wire) > 2 * len(CANARY)
    for needle in (CANARY.encode(), b"canary-7f3a9c", b"sk-test", b"chat/completions", b"messages"):
        assert needle not in wire


def test_client_proxy_streams_chunk_by_chunk(client_proxy: tuple[AppState, int, RecordingTCPRelay]) -> None:
    state, proxy_port, _ = client_proxy
    with httpx2.Client() as client:
        with _stream_sse(client, proxy_port) as response:
            events = _sse(response)
            assert next(events) == {"n": 0, "sealed": True}
            state.release.set()
            assert [next(events)["n"] for _ in range(3)] == [1, 2, 3]
    # Closing the local stream closes the sealed one, and the gateway cancels generation.
    assert wait_for(lambda: "closed" in state.stream_events, 2.5)
    assert "completed" not in state.stream_events


def test_client_proxy_refuses_unverified_enclave(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    origin = f"http://127.0.0.1:{port}"

    def refuse(document: Mapping[str, Any], policy: Any, *, nonce: bytes | None = None) -> Any:
        raise ValueError("simulated evidence not allowed")

    source = AttestedKeySource(origin, None, refuse)
    transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
    with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
        response = httpx2.post(f"http://127.0.0.1:{proxy_port}/echo", json={"prompt": CANARY})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "enclave_unverified"
    assert state.requests == []


def test_client_proxy_answers_an_unreachable_gateway_with_an_error(
        gateway: tuple[AppState, int]) -> None:
    """The gateway's host refuses connections: the local client gets the documented JSON error
    (502 ``gateway_unreachable``), not a bare 500."""
    state, _ = gateway
    dead = free_port()
    source = StaticKeySource(state.keys.key_configs())
    transport = AsyncSealedTransport(gateway_url=f"http://127.0.0.1:{dead}{GATEWAY_PATH}",
                                     key_source=source)
    with serve(server_config(ClientProxy(transport, f"http://127.0.0.1:{dead}"))) as proxy_port:
        response = httpx2.post(f"http://127.0.0.1:{proxy_port}/echo", json={"prompt": CANARY})
    assert response.status_code == 502
    assert response.json()["error"] == {
        "message": "the gateway could not be reached (ConnectError)",
        "type": "sealed_transport_error", "param": None, "code": "gateway_unreachable"}


def test_client_proxy_gives_up_on_a_gateway_that_never_answers(
        gateway: tuple[AppState, int]) -> None:
    """A gateway host that accepts the connection and then stays silent: the local client gets
    502 ``response_invalid`` once the forwarder's timeout passes, not an endless wait, and is
    told not to resend (the request went out; the gateway may have run it)."""
    state, _ = gateway
    with socket.create_server(("127.0.0.1", 0)) as silent:
        origin = f"http://127.0.0.1:{silent.getsockname()[1]}"
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH,
                                         key_source=StaticKeySource(state.keys.key_configs()))
        proxy = ClientProxy(transport, origin, timeout=httpx2.Timeout(0.5))
        with serve(server_config(proxy)) as proxy_port:
            response = httpx2.post(f"http://127.0.0.1:{proxy_port}/echo", json={"prompt": CANARY},
                                   timeout=30)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "response_invalid"
    assert "ReadTimeout" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"


def test_client_proxy_does_not_have_a_request_resent_that_the_gateway_may_have_run(
        gateway: tuple[AppState, int]) -> None:
    """A gateway host that reads each sealed request whole and then drops the connection: the
    request may have run there, so the OpenAI SDK (which resends 5xx answers by itself) is told
    not to resend it, and the gateway host sees it once. Connection refused, by contrast, is
    ``gateway_unreachable`` without that header (nothing was sent)."""
    state, _ = gateway
    delivered: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as dropping:
        dropping.settimeout(10)

        def drop_each() -> None:
            while True:
                try:
                    conn, _ = dropping.accept()
                except OSError:
                    return
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length:")))
                    while len(body) < length:
                        body += conn.recv(65536)
                    delivered.append(body)

        threading.Thread(target=drop_each, daemon=True).start()
        origin = f"http://127.0.0.1:{dropping.getsockname()[1]}"
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH,
                                         key_source=StaticKeySource(state.keys.key_configs()))
        with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
            sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{proxy_port}/v1", api_key="sk-test",
                                max_retries=3)
            with pytest.raises(openai.InternalServerError) as failed:
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": CANARY}])
    assert failed.value.status_code == 502
    assert failed.value.response.json()["error"]["code"] == "response_invalid"
    assert len(delivered) == 1
    assert CANARY.encode() not in delivered[0]


class _Counting(httpx2.HTTPTransport):
    """Counts the sealed requests that reach the gateway."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        return super().handle_request(request)


def _skewed(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This client's clock ``seconds`` ahead of the gateway's (a fault: a clock that drifted)."""
    import time

    import proxy.client._core as core

    monkeypatch.setattr(core, "time", types.SimpleNamespace(time=lambda: time.time() + seconds))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_client_whose_clock_is_off_learns_the_gateways(
        gateway: tuple[AppState, int], monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    """RFC 9458 §6.5: the gateway refuses a request dated outside its window, sealed, with its
    own Date. That refusal is authenticated and the request was not run, so the client corrects
    its clock from it and seals the request once more; later requests go out right first time."""
    state, port = gateway
    _skewed(monkeypatch, 90.0)
    inner = _Counting()
    transport = SealedTransport(inner, gateway_url=f"http://127.0.0.1:{port}{GATEWAY_PATH}",
                                key_source=StaticKeySource(state.keys.key_configs()))
    client = _openai(f"http://127.0.0.1:{port}/v1", transport)
    messages = [{"role": "user", "content": CANARY}]
    for _ in range(2):
        if stream:
            chunks = client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
            assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == CANARY[::-1]
        else:
            completion = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == CANARY[::-1]
    assert inner.sent == 3 and state.requests == [True, True]  # refused once, run twice
    assert -92 < transport.clock.offset < -88


def test_an_async_client_whose_clock_is_off_learns_the_gateways(
        gateway: tuple[AppState, int], monkeypatch: pytest.MonkeyPatch) -> None:
    state, port = gateway
    _skewed(monkeypatch, -120.0)
    transport = AsyncSealedTransport(gateway_url=f"http://127.0.0.1:{port}{GATEWAY_PATH}",
                                     key_source=StaticKeySource(state.keys.key_configs()))

    async def call() -> openai.types.chat.ChatCompletion:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test",
                                    http_client=httpx2.AsyncClient(transport=transport), max_retries=0)
        async with client:
            return await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": CANARY}])

    assert asyncio.run(call()).choices[0].message.content == CANARY[::-1]
    assert state.requests == [True] and 118 < transport.clock.offset < 122


def test_a_stale_refusal_that_moves_no_clock_is_not_resent(
        gateway: tuple[AppState, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that went stale on its way (the clocks agree) is refused and handed back as
    is: sealing it again would not help."""
    state, port = gateway
    state.guard._clock = lambda: time.time() + 300  # a fault: the gateway's window moved on
    inner = _Counting()
    transport = SealedTransport(inner, gateway_url=f"http://127.0.0.1:{port}{GATEWAY_PATH}",
                                key_source=StaticKeySource(state.keys.key_configs()))
    with httpx2.Client(transport=transport) as client:
        answer = client.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                             json={"model": "m", "messages": []})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "stale_request"
    assert inner.sent == 1 and state.requests == [] and transport.clock.offset < 1.5


class FaultInjectingAsyncTruncatingTransport(httpx2.AsyncBaseTransport):
    """The async twin of ``FaultInjectingTruncatingTransport``: a streamed answer cut short."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, keep: int) -> None:
        self.inner, self.keep = inner, keep

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        keep, stream = self.keep, response.stream

        class Cut(httpx2.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                i = 0
                async for piece in stream:  # type: ignore[union-attr]
                    if i >= keep:
                        return
                    i += 1
                    yield piece

            async def aclose(self) -> None:
                await stream.aclose()  # type: ignore[union-attr]

        return httpx2.Response(response.status_code, headers=response.headers, stream=Cut())


def test_client_proxy_cuts_a_broken_stream_off_with_one_line(
        gateway: tuple[AppState, int], caplog: pytest.LogCaptureFixture) -> None:
    """A sealed stream that breaks off (here: its final chunk never comes) reaches the local
    client cut off, not ended cleanly (which would pass it as whole), and the forwarder logs
    one line naming the failure, not a traceback."""
    state, port = gateway
    state.release.set()
    origin = f"http://127.0.0.1:{port}"
    transport = AsyncSealedTransport(
        FaultInjectingAsyncTruncatingTransport(httpx2.AsyncHTTPTransport(), keep=3),
        gateway_url=origin + GATEWAY_PATH, key_source=StaticKeySource(state.keys.key_configs()))
    with caplog.at_level(logging.WARNING), serve(server_config(ClientProxy(transport, origin))) as proxy_port:
        with httpx2.Client() as client, pytest.raises(httpx2.RemoteProtocolError):
            with client.stream("POST", f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                               json={"model": "m", "stream": True,
                                     "messages": [{"role": "user", "content": CANARY}]}) as answer:
                assert answer.status_code == 200
                answer.read()
    lines = [r.getMessage() for r in caplog.records if r.name == "sealgate.client_proxy"]
    assert lines == ["sealgate client-proxy: the gateway's answer broke off (response_invalid)"]
    assert not any("Exception in ASGI application" in r.getMessage() for r in caplog.records)
    assert all(CANARY not in r.getMessage() for r in caplog.records)
