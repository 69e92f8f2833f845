"""The sealed channel answers as a plain request would, and the client proxy answers its local
client as the gateway would have: HEAD without content, local disconnects reaching the
gateway, odd request targets, oversized bodies and headers that never finish answered with a
4xx (real servers on loopback)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from email.utils import formatdate
from typing import Any

import httpx2
import openai
import pytest
from litestar import Request, Response, post
from litestar.response import Stream

from proxy.client import (
    AsyncSealedTransport,
    ClientProxy,
    SealedTransport,
    SealedTransportError,
    StaticKeySource,
    async_sealed_openai,
    sealed_openai,
)
from proxy.client._core import seal
from proxy.client._forwarder import MAX_CONNECTIONS, server_config
from proxy.gateway import GATEWAY_PATH
from proxy.ohttp import (
    BHTTPRequest,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    GatewayKey,
    MediaType,
    decode_key_configs,
    decode_response,
    encapsulate_request,
    encode_key_configs,
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
    with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
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
        with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
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
        with serve(server_config(ClientProxy(transport, origin, max_body=1024))) as proxy_port:
            url = f"http://127.0.0.1:{proxy_port}/echo"
            body = b'{"x": "' + b"a" * 4096 + b'"}'
            content = body if framing == "content-length" else iter([body[:100], body[100:]])
            response = httpx2.post(url, content=content)
            fits = httpx2.post(url, content=b'{"x": 1}')
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert fits.status_code == 200 and state.requests == [True]


HEADER_TIMEOUT = 0.5


@contextmanager
def _proxy_with_deadline(timeout: float) -> Iterator[tuple[AppState, int]]:
    """The client proxy, with a header deadline of ``timeout`` seconds, before a gateway."""
    state = AppState()
    with serve(build_app(state)) as port:
        origin = f"http://127.0.0.1:{port}"
        source = StaticKeySource(state.keys.key_configs())
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
        config = server_config(ClientProxy(transport, origin), header_timeout=timeout)
        with serve(config) as proxy_port:
            yield state, proxy_port


@pytest.fixture
def impatient_proxy() -> Iterator[tuple[AppState, int]]:
    with _proxy_with_deadline(HEADER_TIMEOUT) as proxy:
        yield proxy


def _trickle(sock: socket.socket, data: bytes, pause: float = 0.05) -> bytes:
    """Send ``data`` a byte every ``pause`` seconds until the server answers or closes; then
    return all it sent before closing."""
    answer, rest = b"", data
    while True:
        sock.settimeout(pause if rest else 10)
        try:
            received = sock.recv(65536)
        except TimeoutError:
            if not rest:
                raise
            sock.sendall(rest[:1])
            rest = rest[1:]
            continue
        except ConnectionResetError:
            return answer
        if not received:
            return answer
        answer += received


def _assert_408(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in lines and b"content-type: application/json" in lines
    assert json.loads(body) == {"error": {
        "message": "the request headers took too long to arrive", "type": "sealed_transport_error",
        "param": None, "code": "request_timeout"}}


@pytest.mark.parametrize(("at_once", "trickled"), [
    (b"", b"POST /echo HTTP/1.1\r\n"),  # the request line
    (b"POST /echo HTTP/1.1\r\n", b"Host: x\r\nContent-Type: application/json\r\n"),  # the headers
])
def test_client_proxy_answers_headers_that_trickle_past_the_deadline_with_408(
        impatient_proxy: tuple[AppState, int], at_once: bytes, trickled: bytes) -> None:
    """Every byte comes soon after the last, yet the header section is not done at the deadline,
    counted from the connection's opening: 408, then the connection is closed."""
    state, proxy_port = impatient_proxy
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        opened = time.monotonic()
        sock.sendall(at_once)
        answer = _trickle(sock, trickled)
        waited = time.monotonic() - opened
    _assert_408(answer)
    assert HEADER_TIMEOUT * 0.9 <= waited < HEADER_TIMEOUT + 2
    assert state.requests == []


def test_client_proxy_closes_a_connection_that_sends_nothing(
        impatient_proxy: tuple[AppState, int]) -> None:
    """Nothing of a request came, so nothing is answered: the connection is just closed, as
    an idle kept-alive one is, and a client may retry on a fresh connection."""
    _, proxy_port = impatient_proxy
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        opened = time.monotonic()
        assert sock.recv(65536) == b""
        waited = time.monotonic() - opened
    assert HEADER_TIMEOUT * 0.9 <= waited < HEADER_TIMEOUT + 2


def test_client_proxy_serves_headers_that_arrive_slowly_within_the_deadline(
        impatient_proxy: tuple[AppState, int]) -> None:
    """Headers that arrive in pieces but are complete in time are served; the deadline ends with
    them, so a body that comes after it has passed is still read (it has its own limit)."""
    state, proxy_port = impatient_proxy
    body = b'{"x": 1}'
    pieces = [b"POST /echo HT", b"TP/1.1\r\nHost: x\r\nContent-", b"Type: application/json\r\n",
              b"Content-Length: %d\r\nConnection: close\r\n" % len(body), b"\r\n"]
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        opened = time.monotonic()
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(HEADER_TIMEOUT / 10)
        time.sleep(max(0.0, opened + HEADER_TIMEOUT * 1.5 - time.monotonic()))
        sock.sendall(body)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(content)["data"] == {"x": 1}
    assert state.requests == [True]


def test_client_proxy_cuts_a_kept_alive_connection_whose_next_request_trickles(
        impatient_proxy: tuple[AppState, int]) -> None:
    """On a kept-alive connection the deadline counts from the end of the previous answer: a
    trickling second request gets 408 as a first one would."""
    state, proxy_port = impatient_proxy
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    try:
        conn.request("POST", "/echo", body=b'{"x": 1}', headers={"Content-Type": "application/json"})
        first = conn.getresponse()
        assert (first.status, json.loads(first.read())["data"]) == (200, {"x": 1})
        answered = time.monotonic()
        assert conn.sock is not None and not first.will_close
        answer = _trickle(conn.sock, b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        waited = time.monotonic() - answered
    finally:
        conn.close()
    _assert_408(answer)
    assert HEADER_TIMEOUT * 0.9 <= waited < HEADER_TIMEOUT + 2
    assert state.requests == [True]


def test_client_proxy_takes_back_the_slots_of_trickling_connections() -> None:
    """A local process holding every connection slot with unfinished headers shuts others out
    (503) only until the deadline; then each of its connections gets 408 and service resumes.
    The deadline is longer here: every slot must be taken before the first one expires."""
    with _proxy_with_deadline(5.0) as (state, proxy_port):
        url = f"http://127.0.0.1:{proxy_port}/echo"
        held = [socket.create_connection(("127.0.0.1", proxy_port), timeout=20)
                for _ in range(MAX_CONNECTIONS)]
        try:
            for sock in held:
                sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            shut_out = httpx2.post(url, json={"x": 1})
            answers = [_trickle(sock, b"") for sock in held]
        finally:
            for sock in held:
                sock.close()
        served = httpx2.post(url, json={"x": 1})
    assert shut_out.status_code == 503
    for answer in answers:
        _assert_408(answer)
    assert served.status_code == 200 and served.json()["data"] == {"x": 1}
    assert state.requests == [True]


def test_client_proxy_ignores_empty_lines_before_a_request(impatient_proxy: tuple[AppState, int]) -> None:
    """RFC 9112 §2.2: a server ignores empty lines before a request line, as some clients send
    one after a request's body; each request here is answered."""
    state, proxy_port = impatient_proxy
    body = b'{"x": 1}'
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(b"\r\n" + request)
        first = _response(sock)
        sock.sendall(b"\r\n")  # after the body, on its own
        sock.sendall(request)
        second = _response(sock)
    assert first.startswith(b"HTTP/1.1 200 OK") and second.startswith(b"HTTP/1.1 200 OK")
    assert state.requests == [True, True]


def test_client_proxy_ignores_empty_lines_that_come_with_a_body(
        impatient_proxy: tuple[AppState, int]) -> None:
    """The empty line a client sends after a body may arrive in the same read as the body's
    end, even with the next request behind it (pipelined): h11 kept it for the next request
    and answered that 400."""
    state, proxy_port = impatient_proxy
    body = b'{"x": 1}'
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock, \
            sock.makefile("rb") as answers:
        def status() -> bytes:  # one answer's status line; the rest of it read past
            line = answers.readline()
            length = 0
            while (header := answers.readline()) != b"\r\n":
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            answers.read(length)
            return line

        sock.sendall(request + b"\r\n")
        first = status()
        sock.sendall(request + b"\r\n\r\n" + request)
        second, third = status(), status()
        sock.sendall(request)
        fourth = status()
    assert [first, second, third, fourth] == [b"HTTP/1.1 200 OK\r\n"] * 4
    assert state.requests == [True] * 4


def test_client_proxy_gives_a_pipelined_request_the_header_deadline() -> None:
    """The next request's first bytes came with the previous one: once that is answered, the
    header deadline bounds the rest (408), not uvicorn's keep-alive timer (a quiet close after
    5 s, shorter than the deadline here)."""
    body = b'{"x": 1}'
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with _proxy_with_deadline(6.0) as (state, proxy_port), socket.create_connection(
            ("127.0.0.1", proxy_port), timeout=20) as sock:
        sock.sendall(request + b"POST /echo HTTP/1.1\r\n")
        first = _response(sock)
        rest = b""
        while data := sock.recv(65536):
            rest += data
    assert first.startswith(b"HTTP/1.1 200 OK")
    _assert_408(rest)
    assert state.requests == [True]


def test_client_proxy_lets_an_answer_outlast_the_header_deadline(
        impatient_proxy: tuple[AppState, int]) -> None:
    """The deadline ends with the headers: a streamed answer that lasts several deadlines (the
    gateway's /sse route takes about 3 s) arrives whole."""
    state, proxy_port = impatient_proxy
    state.release.set()
    started = time.monotonic()
    with httpx2.stream("POST", f"http://127.0.0.1:{proxy_port}/sse", json={"stream": True},
                       timeout=30) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    assert time.monotonic() - started > HEADER_TIMEOUT * 4
    assert [e["n"] for e in events] == [0, 1, 2, 3, 99]


def _response(sock: socket.socket) -> bytes:
    """One whole answer with a Content-Length, read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body



def _raw_exchange(state: AppState, port: int, inner: BHTTPRequest, *,
                  chunked: bool) -> tuple[httpx2.Response, int, dict[str, str], bytes]:
    """Seal ``inner`` as written (no client-side cleanup) and open the answer: the outer
    response, and the inner status, header fields and content."""
    config = decode_key_configs(state.keys.key_configs())[0]
    url = f"http://127.0.0.1:{port}{GATEWAY_PATH}"
    if chunked:
        sealer = ChunkedRequestSealer(config)
        body = sealer.seal(encode_request(inner), final=True)
        outer = httpx2.post(url, content=body, headers={"content-type": MediaType.CHUNKED_REQUEST})
        opener = ChunkedResponseOpener(sealer.context)
        answer = decode_response(b"".join(opener.feed(outer.content)) + opener.close())
    else:
        body, context = encapsulate_request(config, encode_request(inner))
        outer = httpx2.post(url, content=body, headers={"content-type": MediaType.REQUEST})
        answer = decode_response(context.open_response(outer.content))
    fields = {n.decode(): v.decode() for n, v in answer.headers}
    return outer, answer.status, fields, answer.content


def _dated(*fields: tuple[bytes, bytes]) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"date", formatdate(usegmt=True).encode()), *fields)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_sealed_request_with_an_expectation_is_refused(gateway: tuple[AppState, int],
                                                        chunked: bool) -> None:
    """RFC 9458 §5.1: the gateway MUST answer a 100-continue expectation with an error (it was
    served), and a client MUST NOT send one (curl adds it to large uploads by itself)."""
    state, port = gateway
    inner = BHTTPRequest(b"POST", b"http", b"t", b"/echo",
                         _dated((b"expect", b"100-continue"), (b"content-type", b"application/json")),
                         b"1")
    outer, status, _, _ = _raw_exchange(state, port, inner, chunked=chunked)
    assert (outer.status_code, status) == (200, 417)
    assert not state.requests
    with _sealed(state, port) as sealed:
        through = sealed.post(f"http://127.0.0.1:{port}/echo", content=b"1",
                              headers={"expect": "100-continue"})
    assert through.status_code == 200 and through.json()["data"] == 1


def test_a_sealed_method_keeps_its_case(gateway: tuple[AppState, int]) -> None:
    """RFC 9110 §9.1: methods are case-sensitive; "post" was served as POST (a plain one is
    refused by the server's parser)."""
    state, port = gateway
    inner = BHTTPRequest(b"post", b"http", b"t", b"/echo", _dated(), b"1")
    _, status, _, _ = _raw_exchange(state, port, inner, chunked=False)
    assert status == 405 and not state.requests


def test_a_chunked_answer_asks_relays_to_pass_chunks_on(gateway: tuple[AppState, int]) -> None:
    """The chunked draft (§3): chunked requests and responses carry ``Incremental: ?1``, so a
    relay that follows it forwards each chunk instead of buffering the whole stream."""
    state, port = gateway
    outer, status, _, _ = _raw_exchange(state, port, BHTTPRequest(b"POST", b"http", b"t", b"/echo",
                                                               _dated(), b"1"), chunked=True)
    assert status == 200 and outer.headers["incremental"] == "?1"
    config = decode_key_configs(state.keys.key_configs())[0]
    request = httpx2.Request("POST", "http://g/v1/chat/completions", content=b'{"stream": true}')
    prepared = seal(request, b'{"stream": true}', config, "http://g" + GATEWAY_PATH)
    assert prepared.outer.headers["incremental"] == "?1"


class _CountingTransport(AsyncSealedTransport):
    """Counts the sealed requests client-proxy sends (a measurement tool)."""

    sent = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        type(self).sent += 1
        return await super().handle_async_request(request)


def test_client_proxy_tells_clients_not_to_resend_a_refused_request(
        gateway: tuple[AppState, int]) -> None:
    """A refusal outside the seal may be forged on the path after the gateway served the
    request: the official SDK resent the 502 twice, each resend sealed afresh (the replay guard
    cannot stop it). ``x-should-retry: false`` makes it send once, as SealedTransport does."""
    _, port = gateway
    origin = f"http://127.0.0.1:{port}"
    foreign = StaticKeySource(encode_key_configs([GatewayKey.generate(200).config]))
    _CountingTransport.sent = 0
    transport = _CountingTransport(gateway_url=origin + GATEWAY_PATH, key_source=foreign)
    with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
        raw = httpx2.post(f"http://127.0.0.1:{proxy_port}/echo", json={"x": 1})
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{proxy_port}/v1", api_key="k",
                               max_retries=2)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raw.status_code == 502 and raw.headers["x-should-retry"] == "false"
    assert raw.json()["error"]["code"] == "gateway_rejected"
    assert _CountingTransport.sent == 2  # one each: the raw request, the SDK's


@pytest.mark.parametrize("front", [True, False])
def test_client_proxy_answers_an_http_1_0_client_whole(monkeypatch: pytest.MonkeyPatch,
                                                       front: bool) -> None:
    """An HTTP/1.0 answer ends where the connection closes, so a sealed stream cut short (no
    final chunk) looked complete to such a client; it gets the whole stream with its length,
    or a 502 when the stream fails to open."""
    monkeypatch.setattr(_apps, "FRONT", front)
    state = AppState()
    state.release.set()

    @post("/fault-injecting-cut", status_code=200)
    async def cut() -> Stream:
        async def events() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            raise RuntimeError("the inner app fails mid-stream")

        return Stream(events(), media_type="text/event-stream")

    app = build_app(state)
    app.register(cut)
    with serve(app) as gateway_port:
        origin = f"http://127.0.0.1:{gateway_port}"
        source = StaticKeySource(state.keys.key_configs())
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
        with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
            answers = {}
            for path in ("/sse", "/fault-injecting-cut"):
                body = b'{"stream": true}'
                answers[path] = _raw(proxy_port, b"POST %s HTTP/1.0\r\nContent-Type: application/json"
                                                  b"\r\nContent-Length: %d\r\n\r\n%s"
                                     % (path.encode(), len(body), body))
    head, _, body = answers["/sse"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: %d" % len(body) in head.lower()
    assert body.count(b"data: ") == 5
    head, _, body = answers["/fault-injecting-cut"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ") and b"x-should-retry: false" in head.lower()
    assert json.loads(body)["error"]["code"] == "response_invalid"


def test_client_proxy_answers_an_http_1_0_head_with_its_length(
        client_proxy: tuple[AppState, int], gateway: tuple[AppState, int]) -> None:
    _, proxy_port = client_proxy
    _, port = gateway
    direct = httpx2.head(f"http://127.0.0.1:{port}/echo")
    answer = _raw(proxy_port, b"HEAD /echo HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and body == b""
    assert b"content-length: %s" % direct.headers["content-length"].encode() in head.lower()


def test_client_proxy_answers_an_http_1_0_client_whose_answer_broke_off(
        gateway: tuple[AppState, int]) -> None:
    """A stream that stops arriving (here past the forwarder's read timeout) is a JSON 502 not
    to resend, not the server's bare 500 with a traceback."""
    state, port = gateway
    origin = f"http://127.0.0.1:{port}"
    source = StaticKeySource(state.keys.key_configs())
    transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
    proxy = ClientProxy(transport, origin, timeout=httpx2.Timeout(10, read=0.5))
    with serve(server_config(proxy)) as proxy_port:
        body = b'{"stream": true}'
        answer = _raw(proxy_port, b"POST /sse HTTP/1.0\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ") and b"x-should-retry: false" in head.lower()
    assert json.loads(content)["error"]["code"] == "response_invalid"


def _header_echo(app: Any) -> None:
    """Adds ``POST /headers``: the request's field names, answered with a field the answer's
    ``Connection`` names (what a hop would add for itself)."""

    @post("/headers", status_code=200)
    async def headers(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        return Response({"names": sorted(request.headers.keys())},
                        headers={"connection": "x-inner-hop", "x-inner-hop": "gateway-internal"})

    app.register(headers)


def test_fields_the_connection_field_names_stay_on_their_hop(gateway: tuple[AppState, int]) -> None:
    """RFC 9110 §7.6.1: an intermediary removes the fields ``Connection`` names. client-proxy
    sealed them into the inner request, and the gateway passed on those of a sealed request and
    of its inner answer."""
    state, _ = gateway
    app = build_app(state)
    _header_echo(app)
    with serve(app) as port:
        origin = f"http://127.0.0.1:{port}"
        inner = BHTTPRequest(b"POST", b"http", b"t", b"/headers",
                             _dated((b"connection", b"x-a"), (b"x-a", b"1"), (b"x-b", b"2")), b"")
        _, status, fields, content = _raw_exchange(state, port, inner, chunked=False)
        source = StaticKeySource(state.keys.key_configs())
        transport = AsyncSealedTransport(gateway_url=origin + GATEWAY_PATH, key_source=source)
        with serve(server_config(ClientProxy(transport, origin))) as proxy_port:
            local = httpx2.post(f"http://127.0.0.1:{proxy_port}/headers", content=b"",
                                headers={"connection": "keep-alive, X-Local-Hop",
                                         "x-local-hop": "local-only-secret", "x-kept": "1"})
    assert status == 200 and "x-inner-hop" not in fields
    assert "x-b" in json.loads(content)["names"] and "x-a" not in json.loads(content)["names"]
    assert "x-kept" in local.json()["names"] and "x-local-hop" not in local.json()["names"]
    assert "x-inner-hop" not in local.headers


def test_a_sealed_openai_client_sends_nothing_over_websockets(gateway: tuple[AppState, int]) -> None:
    """The SDK's Realtime and Responses WebSocket APIs connect beside ``http_client``: with the
    documented setup they sent the API key and the prompt frames, unsealed, to whatever
    answered at the gateway's address (the ingress). ``sealed_openai`` points them where
    nothing answers; its HTTP requests are sealed."""
    state, port = gateway
    key = "sg-CANARY-KEY"
    with socket.create_server(("127.0.0.1", 0)) as ingress:
        ingress.setblocking(False)
        base = f"http://127.0.0.1:{ingress.getsockname()[1]}"
        client = sealed_openai(base, StaticKeySource(state.keys.key_configs()), api_key=key)
        for connect in (lambda: client.realtime.connect(model="m"), client.responses.connect):
            with pytest.raises(OSError), connect():
                pass
        with pytest.raises(BlockingIOError):
            ingress.accept()  # nothing came to the gateway's address
    sealed = sealed_openai(f"http://127.0.0.1:{port}", StaticKeySource(state.keys.key_configs()),
                           api_key=key)
    answer = sealed.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b"}])
    assert answer.choices[0].message.content == "b a" and state.requests == [True]
    with pytest.raises(TypeError, match="sets http_client itself"):
        sealed_openai(base, StaticKeySource(state.keys.key_configs()), http_client=httpx2.Client())


def test_an_async_sealed_openai_client_seals_and_refuses_websockets(
        gateway: tuple[AppState, int]) -> None:
    state, port = gateway
    client = async_sealed_openai(f"http://127.0.0.1:{port}",
                                 StaticKeySource(state.keys.key_configs()), api_key="sg-k")

    async def run() -> str | None:
        with pytest.raises(OSError):
            async with client.realtime.connect(model="m"):
                pass
        answer = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "c d"}])
        await client.close()
        return answer.choices[0].message.content

    assert asyncio.run(run()) == "d c" and state.requests == [True]
