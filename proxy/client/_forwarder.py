"""``sealgate client-proxy``: a plain-HTTP forwarder on loopback that seals everything it sends.

Any OpenAI client pointed at it talks plain HTTP on the local machine only; every request
leaves the machine sealed to the verified enclave key, and answers stream back chunk by chunk.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import h11
import httpx2
import msgspec
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from proxy._listen import bind_listener
from proxy.ohttp import HOP_BY_HOP_FIELDS, end_to_end

from ._core import GATEWAY_PATH, GatewayRejected
from ._errors import SealedTransportError
from ._keysource import KeySource
from ._transport import AsyncSealedTransport

__all__ = [
    "GATEWAY_PATH",
    "ClientProxy",
    "check_loopback",
    "gateway_urls",
    "serve_client_proxy",
    "server_config",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger("sealgate.client_proxy")
# Failures before any byte of the request was sent: resending it cannot run it twice.
_UNSENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
# The forwarder sets its own Host for the sealed inner request.
_HOP_BY_HOP = HOP_BY_HOP_FIELDS | {b"host"}
_HOP_AND_LENGTH = _HOP_BY_HOP | {b"content-length"}  # a whole body's length is set anew
# How long the sealed request may wait on the gateway: to connect, and between any two pieces of
# its answer (a whole answer waits for the generation; the OpenAI SDK's own default is 600 s).
GATEWAY_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)


def gateway_urls(gateway: str) -> tuple[str, str]:
    """``(origin, gateway_url)`` for a Sealgate base URL (or its gateway URL); ``ValueError``
    for anything that is not an ``http(s)://host[:port][/path]`` URL."""
    try:
        parts = urlsplit(gateway)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"the gateway must be an http(s)://host[:port] URL, not {gateway!r}")
    base = gateway.rstrip("/")
    base = base.removesuffix(GATEWAY_PATH)
    return base, base + GATEWAY_PATH


def _error(status: int, err: SealedTransportError) -> tuple[int, bytes]:
    error = {"message": err.detail, "type": "sealed_transport_error", "param": None, "code": err.code}
    return status, msgspec.json.encode({"error": error})


# A request body the forwarder holds at most (the gateway's own default limit is 1 MiB), and the
# time its client may take to send it: a local process must not make the forwarder hold
# unbounded memory, or a connection forever, before the gateway could refuse anything.
MAX_BODY = 16 << 20
BODY_TIMEOUT_S = 60.0


class _TooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    body = bytearray()
    with anyio.fail_after(BODY_TIMEOUT_S):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError
            body += message.get("body", b"")
            if len(body) > limit:
                raise _TooLarge
            if not message.get("more_body", False):
                return bytes(body)


class ClientProxy:
    """The forwarder as a raw ASGI app around an :class:`AsyncSealedTransport`."""

    def __init__(self, transport: AsyncSealedTransport, origin: str, *,
                 timeout: httpx2.Timeout = GATEWAY_TIMEOUT, max_body: int = MAX_BODY) -> None:
        self._transport = transport
        self._origin = origin.rstrip("/")
        self._timeout = timeout.as_dict()
        self._max_body = max_body

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _request(self, scope: Message, body: bytes) -> httpx2.Request:
        target = scope.get("raw_path") or scope["path"].encode()
        if not target.startswith(b"/"):  # e.g. ``OPTIONS *``: nothing at the gateway to address
            raise httpx2.InvalidURL("the request target is not a path")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = end_to_end(scope["headers"], _HOP_AND_LENGTH)
        url = self._origin + target.decode("latin-1")
        return httpx2.Request(scope["method"], url, headers=headers, content=body,
                              extensions={"timeout": self._timeout})

    async def _forward(self, scope: Message, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > self._max_body:
                raise _TooLarge
            body = await _read_body(receive, self._max_body)
        except ConnectionAbortedError:
            return
        except _TooLarge:
            too_large = SealedTransportError(
                "request_too_large", f"the request body is larger than {self._max_body} bytes")
            await _send_whole(send, *_error(413, too_large))
            return
        except TimeoutError:
            slow = SealedTransportError("request_timeout", "the request body took too long to arrive")
            await _send_whole(send, *_error(408, slow))
            return
        # The local client may leave while the gateway is still working on a whole (non-streamed)
        # answer: closing the sealed request then lets the gateway stop the backend, as it would
        # for a client connected to it directly.
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            await self._exchange(scope, body, send)
            group.cancel_scope.cancel()

    async def _exchange(self, scope: Message, body: bytes, send: Send) -> None:
        try:
            request = self._request(scope, body)
        except httpx2.InvalidURL:
            invalid = SealedTransportError("invalid_request", "the request target cannot be forwarded")
            await _send_whole(send, *_error(400, invalid))
            return
        try:
            response = await self._transport.handle_async_request(request)
        except SealedTransportError as err:
            await _send_error(send, err)
            return
        except _UNSENT as exc:  # no connection: the request was not sent, a resend is safe
            unreachable = SealedTransportError(
                "gateway_unreachable", f"the gateway could not be reached ({type(exc).__name__})")
            await _send_whole(send, *_error(502, unreachable))
            return
        except httpx2.HTTPError as exc:  # sent, at least in part: the gateway may have run it
            broken = SealedTransportError(
                "response_invalid", f"the gateway's answer broke off ({type(exc).__name__})")
            await _send_error(send, broken)
            return
        try:
            if scope.get("http_version") == "1.0":
                await _relay_whole(response, send, head=scope["method"] == "HEAD")
            else:
                await _relay(response, send)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()


def _failure_status(err: SealedTransportError) -> int:
    """503 when the enclave is unverified; 400 for a request it cannot seal; the gateway's
    own 413 when the body was too large for it, so the local client sees the same answer as a
    direct one (and does not retry); otherwise 502, for a fault between this forwarder and the
    gateway."""
    if err.code == "enclave_unverified":
        return 503
    if err.code == "request_invalid":
        return 400
    if isinstance(err, GatewayRejected) and err.status == 413:
        return 413
    return 502


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Stop forwarding when the local client goes away, so the sealed request is closed too."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _relay(response: httpx2.Response, send: Send) -> None:
    """The answer as it arrives. One that breaks off (the gateway went away, a sealed chunk
    failed to open, the stream lacks its final chunk) is left unfinished: the connection
    closes without the end of the chunked body, which tells the local client it was cut
    short (a clean end would pass the truncated answer as whole)."""
    headers = end_to_end(response.headers.raw, _HOP_BY_HOP)
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    try:
        async for chunk in response.stream:  # type: ignore[union-attr]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (SealedTransportError, httpx2.HTTPError) as exc:
        code = exc.code if isinstance(exc, SealedTransportError) else type(exc).__name__
        _log.warning("sealgate client-proxy: the gateway's answer broke off (%s)", code)
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay_whole(response: httpx2.Response, send: Send, *, head: bool) -> None:
    """The answer for an HTTP/1.0 client, whole: its answers end where the connection closes,
    so a stream cut short (a sealed stream without its final chunk) would look complete. It is
    read first, and one that fails to open or arrive whole is an error answer instead. (An
    answer to HEAD keeps its length: it has no content.)"""
    try:
        body = await response.aread()
    except SealedTransportError as err:
        await _send_error(send, err)
        return
    except httpx2.HTTPError as exc:  # the outer answer broke off: the request may have run
        broken = SealedTransportError(
            "response_invalid", f"the gateway's answer broke off ({type(exc).__name__})")
        await _send_error(send, broken)
        return
    headers = end_to_end(response.headers.raw, _HOP_BY_HOP if head else _HOP_AND_LENGTH)
    if not head:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# Failures after which the request may have run at the gateway: a refusal that could be an
# on-path forgery after the gateway served it, or an answer tampered with. OpenAI SDKs resend
# 5xx answers by themselves unless told not to; each resend is sealed afresh, so the replay
# guard would not stop it (docs/protocol.md: the client does not resend these).
_NOT_RETRIED = frozenset({"gateway_rejected", "response_invalid"})


async def _send_error(send: Send, err: SealedTransportError) -> None:
    await _send_whole(send, *_error(_failure_status(err), err), retry=err.code not in _NOT_RETRIED)


async def _send_whole(send: Send, status: int, body: bytes, *, retry: bool = True) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if not retry:
        headers.append((b"x-should-retry", b"false"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def check_loopback(host: str) -> None:
    """``ValueError`` unless ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError("the client proxy speaks plain HTTP and listens on loopback only")


# How long a client may take to send a request's line and header fields, counted from the
# connection's opening or from the end of the previous answer on a kept-alive one. uvicorn bounds
# neither (its keep-alive timer stops at the first byte of the next request), so a local process
# trickling header bytes would hold connections, and the slots of the connection cap, forever.
HEADER_TIMEOUT_S = 10.0
# From this many open connections (or requests in flight) on, a new request is answered 503: one
# local process cannot have the forwarder take on work without bound.
MAX_CONNECTIONS = 256


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 connection with a deadline on each request's header section.

    Armed when the connection opens and whenever an answer is complete; disarmed once the next
    request's headers are, which is when uvicorn starts a new request cycle. At the deadline the
    connection is closed, after a 408 if part of a request came and nothing answered it yet
    (RFC 9110 §15.5.9); a connection that sent nothing is closed quietly, so that an HTTP client
    may retry on a fresh one as it would after an idle keep-alive close.

    It hooks into uvicorn's internals (``on_response_complete``, ``cycle``, ``conn``), hence the
    upper bound on uvicorn in ``pyproject.toml``; the client-proxy tests exercise every hook."""

    header_timeout = HEADER_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn.their_state in (h11.IDLE, h11.DONE) and not conn.trailing_data[0]:
            # Empty lines before a request line are ignored (RFC 9112 §2.2), as some clients
            # send one after a request's body; h11 would answer them 400.
            data = data.lstrip(b"\r\n")
            if not data:
                return
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        restarted = self._restart_past_empty_lines()
        super().on_response_complete()
        if restarted and not self.transport.is_closing():
            self.handle_events()  # what came after the empty lines (uvicorn's own restart does)
        conn = self.conn
        if conn.our_state is h11.IDLE and conn.their_state is h11.IDLE and conn.trailing_data[0]:
            # The next request has begun: the header deadline, not the keep-alive timer, is
            # what bounds it now.
            self._unset_keepalive_if_required()
        self._watch()

    def _restart_past_empty_lines(self) -> bool:
        """Empty lines that came in the same read as the end of a request's body stay in h11's
        buffer, and h11 would answer them 400 in the next cycle. With both sides done, the next
        cycle starts on a fresh h11 connection (the same state h11's own restart gives) fed what
        follows them. Whether it did."""
        conn = self.conn
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        data = conn.trailing_data[0]
        if data[:1] not in (b"\r", b"\n"):
            return False
        limit = self.config.h11_max_incomplete_event_size  # None: h11's own default, as uvicorn's
        self.conn = (h11.Connection(h11.SERVER) if limit is None
                     else h11.Connection(h11.SERVER, max_incomplete_event_size=limit))
        if rest := data.lstrip(b"\r\n"):  # (an empty one would tell h11 the input ended)
            self.conn.receive_data(rest)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if not waiting or self.transport.is_closing():
            self._disarm()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        conn = self.conn
        if conn.our_state is h11.IDLE and conn.their_state is h11.IDLE and conn.trailing_data[0]:
            slow = SealedTransportError("request_timeout", "the request headers took too long to arrive")
            status, body = _error(408, slow)
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            events = (h11.Response(status_code=status, headers=headers, reason=b"Request Timeout"),
                      h11.Data(data=body), h11.EndOfMessage())
            try:
                self.transport.write(b"".join(conn.send(event) or b"" for event in events))
            except h11.LocalProtocolError:
                pass
        self.transport.close()


def server_config(app: ClientProxy, *, host: str = "127.0.0.1", port: int = 8787,
                  header_timeout: float = HEADER_TIMEOUT_S) -> uvicorn.Config:
    """The uvicorn configuration the forwarder runs under (loopback only). HTTP/1.1 is parsed by
    h11 whichever parsers are installed: the header deadline is built on it, and it refuses a
    header section still incomplete past 16 KiB (a plain 400 from uvicorn)."""
    check_loopback(host)

    class ClientProxyHTTP(_HeaderDeadline):
        pass

    ClientProxyHTTP.header_timeout = header_timeout
    return uvicorn.Config(
        app, host=host, port=port, access_log=False, log_level="warning", ws="none",
        http=ClientProxyHTTP, limit_concurrency=MAX_CONNECTIONS,
    )


def serve_client_proxy(
    gateway: str, key_source: KeySource, *, host: str = "127.0.0.1", port: int = 8787,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Run the forwarder on ``host:port`` (loopback only) until interrupted; ``on_listening``
    is called once it listens. ``ValueError`` when it cannot listen there (the port is taken),
    said before anything else starts."""
    check_loopback(host)
    origin, gateway_url = gateway_urls(gateway)
    sock = bind_listener(host, port)
    transport = AsyncSealedTransport(gateway_url=gateway_url, key_source=key_source)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_listening is not None:
                on_listening()

    try:
        Server(server_config(ClientProxy(transport, origin), host=host, port=port)).run(sockets=[sock])
    finally:
        sock.close()
