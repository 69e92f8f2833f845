"""The sealed channel answers as a plain request would, and the client proxy answers its local
client as the gateway would have: HEAD without content, local disconnects reaching the
gateway, odd request targets and oversized bodies answered with a 4xx (real servers on
loopback)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate

import httpx2
import pytest
from litestar import Response, post

from proxy.client import (
    AsyncSealedTransport,
    ClientProxy,
    SealedTransport,
    SealedTransportError,
    StaticKeySource,
)
from proxy.gateway import GATEWAY_PATH
from proxy.ohttp import (
    BHTTPRequest,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    MediaType,
    decode_key_configs,
    decode_response,
    encode_request,
)
from tests.ohttp import _apps
from tests.ohttp._apps import AppState, build_app, serve, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["front", "route"])
def gateway(request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AppState, int]]:
    """The gateway on loopback, with non-chunked sealed requests served by ``gateway_front``
    and by the framework route alone."""
    monkeypatch.setattr(_apps, "FRONT", request.param == "front")
    state = AppState()
    with serve(build_app(state)) as port:
        yield state, port


def _sealed(state: AppState, port: int) -> httpx2.Client:
    url = f"http://127.0.0.1:{port}{GATEWAY_PATH}"
    source = StaticKeySource(state.keys.key_configs())
    return httpx2.Client(transport=SealedTransport(gateway_url=url, key_source=source))


def test_sealed_head_answer_has_no_content_like_a_plain_one(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    url = f"http://127.0.0.1:{port}/echo"
    with httpx2.Client() as plain, _sealed(state, port) as sealed:
        direct, through = plain.head(url), sealed.head(url)
    assert through.extensions["sealgate"].chunked is False
    assert (through.status_code, through.content) == (direct.status_code, direct.content) == (405, b"")
    assert through.headers["content-length"] == direct.headers["content-length"]


def test_chunked_sealed_head_answer_has_no_content(gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    config = decode_key_configs(state.keys.key_configs())[0]
    date = ((b"date", formatdate(usegmt=True).encode()),)
    sealer = ChunkedRequestSealer(config)
    body = sealer.seal(encode_request(BHTTPRequest(b"HEAD", b"http", b"t", b"/echo", date)), final=True)
    outer = httpx2.post(f"http://127.0.0.1:{port}{GATEWAY_PATH}", content=body,
                        headers={"content-type": MediaType.CHUNKED_REQUEST})
    assert outer.status_code == 200
    opener = ChunkedResponseOpener(sealer.context)
    answer = decode_response(b"".join(opener.feed(outer.content)) + opener.close())
    assert (answer.status, answer.content) == (405, b"")


@pytest.mark.parametrize("stream", [False, True])
def test_an_inner_status_binary_http_cannot_carry_is_a_sealed_500(
        monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    """The inner app's fault comes after decapsulation, so it is answered inside the
    encapsulation (RFC 9458 §5.2), not as an outer ``bhttp_malformed`` blaming the client."""
    monkeypatch.setattr(_apps, "FRONT", True)
    state = AppState()
    app = build_app(state)

    @post("/fault-injecting-status", status_code=200)
    async def fault_injecting_status() -> Response[bytes]:
        return Response(b"x", status_code=600)

    app.register(fault_injecting_status)
    with serve(app) as port, _sealed(state, port) as client:
        response = client.post(f"http://127.0.0.1:{port}/fault-injecting-status", json={"stream": stream})
    assert response.extensions["sealgate"].chunked is stream
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


@pytest.fixture
def client_proxy(gateway: tuple[AppState, int]) -> Iterator[tuple[AppState, int]]:
    state, port = gateway
    origin = f"http://127.0.0.1:{port}"
    source = StaticKeySource(state.keys.key_configs())
    transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
    with serve(ClientProxy(transport, origin)) as proxy_port:
        yield state, proxy_port


def test_client_proxy_relays_a_local_disconnect_before_the_answer(
        client_proxy: tuple[AppState, int]) -> None:
    """A non-streamed request is answered whole; a local client leaving while the gateway works
    on it must close the sealed request, so the inner handler stops as for a direct client."""
    state, proxy_port = client_proxy
    state.release.set()
    body = json.dumps({"stream": False}).encode()  # non-chunked: the whole answer comes at once
    with socket.create_connection(("127.0.0.1", proxy_port)) as sock:
        sock.sendall(b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.5)
    # The route's generator runs ~3 s more unless the disconnect reaches it.
    assert wait_for(lambda: "closed" in state.stream_events, 2.5)
    assert "completed" not in state.stream_events


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer


def test_client_proxy_answers_a_target_that_is_not_a_path_with_400(
        client_proxy: tuple[AppState, int]) -> None:
    state, proxy_port = client_proxy
    answer = _raw(proxy_port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"]["code"] == "invalid_request"
    assert state.requests == []


def test_client_proxy_passes_on_the_gateways_413(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body too large for the gateway is the local client's fault: 413 as from the gateway
    directly, not a 502 that OpenAI clients retry."""
    monkeypatch.setattr(_apps, "FRONT", True)
    state = AppState()
    with serve(build_app(state, max_body_size=4096)) as port:
        origin = f"http://127.0.0.1:{port}"
        source = StaticKeySource(state.keys.key_configs())
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
        with serve(ClientProxy(transport, origin)) as proxy_port:
            response = httpx2.post(f"http://127.0.0.1:{proxy_port}/echo", json={"x": "a" * 10_000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "gateway_rejected"
    assert state.requests == []


def test_sealed_header_values_lose_surrounding_whitespace(gateway: tuple[AppState, int]) -> None:
    """A server reading HTTP/1.1 drops the spaces and tabs around a field value; Binary HTTP
    forbids them, so the client drops them rather than send what the gateway refuses. A field
    that stays invalid (a NUL) is refused before anything is sent."""
    state, port = gateway
    url = f"http://127.0.0.1:{port}/echo"
    with _sealed(state, port) as sealed:
        for value in (" v", "v\t", " \tv "):
            through = sealed.post(url, content=b"1", headers={"x-trace": value})
            assert through.status_code == 200 and through.json()["data"] == 1, value
        sent = len(state.requests)
        with pytest.raises(SealedTransportError) as info:
            sealed.post(url, content=b"1", headers={"x-trace": "a\x00b"})
    assert info.value.code == "request_invalid" and len(state.requests) == sent


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_proxy_refuses_a_body_past_its_limit_before_holding_it(framing: str) -> None:
    """The forwarder holds a request body before it can seal it: past its limit it answers
    413 itself, without reading the rest or sending anything to the gateway."""
    state = AppState()
    with serve(build_app(state)) as port:
        origin = f"http://127.0.0.1:{port}"
        source = StaticKeySource(state.keys.key_configs())
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
        with serve(ClientProxy(transport, origin, max_body=1024)) as proxy_port:
            url = f"http://127.0.0.1:{proxy_port}/echo"
            body = b'{"x": "' + b"a" * 4096 + b'"}'
            content = body if framing == "content-length" else iter([body[:100], body[100:]])
            response = httpx2.post(url, content=content)
            fits = httpx2.post(url, content=b'{"x": 1}')
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert fits.status_code == 200 and state.requests == [True]
