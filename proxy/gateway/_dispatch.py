"""In-process dispatch of an opened request to the same ASGI app, without a socket hop.

The inner scope is built from scratch from the BHTTP request, so nothing from the outer
connection (client address, outer headers, root path, extensions, per-connection state) leaks
into it, and the :class:`SealedChannel` marker can only come from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio

from proxy.ohttp import (
    HOP_BY_HOP_FIELDS,
    BHTTPRequest,
    BHTTPResponse,
    ChunkedResponseSealer,
    ResponseStreamEncoder,
    end_to_end,
)

from ._channel import SCOPE_EXTENSION, SealedChannel
from ._errors import GatewayError, error_body

__all__ = ["ASGIApp", "build_scope", "collect_response", "error_response", "stream_response"]

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]
Receive = Callable[[], Awaitable[Any]]

# Inner request fields the app does not see: connection-specific ones, and a length the
# scope states itself (from the content).
_NOT_PASSED = HOP_BY_HOP_FIELDS | {b"content-length"}
_DISCONNECT_GRACE_S = 1.0
# Messages a streamed inner response may run ahead of the client: beyond this the inner app
# waits, so a slow reader slows generation down (as a socket's send buffer would) instead of
# the gateway buffering the whole completion.
_STREAM_AHEAD = 16
_DONE = "sealgate.inner.done"
_NOT_IN_TARGET = re.compile(rb"[^\x21-\x7e]")


def _bad(detail: str) -> GatewayError:
    return GatewayError("bad_inner_request", detail)


def build_scope(request: BHTTPRequest, channel: SealedChannel) -> dict[str, Any]:
    """A fresh HTTP scope for the inner request, marked with its :class:`SealedChannel`."""
    if _NOT_IN_TARGET.search(request.path):  # the query too: ASGI carries it percent-encoded
        raise _bad("request target is not printable ASCII")
    try:
        method, scheme = request.method.decode("ascii"), request.scheme.decode("ascii").lower()
        raw_path, _, query = request.path.partition(b"?")
        path = unquote(raw_path.decode("ascii"))
    except UnicodeDecodeError:
        raise _bad("request line is not ASCII") from None
    if not method.isalpha() or scheme not in ("http", "https") or not path.startswith("/"):
        raise _bad("invalid method, scheme or path")
    headers = [(n.lower(), v) for n, v in end_to_end(request.headers, _NOT_PASSED)]
    if any(n == b"expect" for n, _ in headers):
        # RFC 9458 §5.1: the gateway MUST generate an error for a 100-continue expectation;
        # the inner request arrives whole, so no other expectation can be met either.
        raise GatewayError("expectation_failed", "a sealed request cannot carry an Expect field",
                           417)
    if request.authority and not any(n == b"host" for n, _ in headers):
        headers.insert(0, (b"host", request.authority))
    if request.content or method in ("POST", "PUT", "PATCH"):
        headers.append((b"content-length", str(len(request.content)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,  # case-sensitive (RFC 9110 §9.1): "post" is not POST
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": None,
        "server": None,
        "state": {},
        "extensions": {SCOPE_EXTENSION: channel},
    }


def _fields(headers: Any) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.lower(), v) for n, v in end_to_end((bytes(n), bytes(v)) for n, v in headers))


def error_response(err: GatewayError) -> BHTTPResponse:
    """An inner error answer, sealed like any response (RFC 9458 §5.2)."""
    headers = ((b"content-type", b"application/json"),)
    return BHTTPResponse(err.status, headers, error_body(err))


_INTERNAL = GatewayError("internal_error", "the request could not be completed", status=500)


class _InnerExchange:
    """receive/send for the inner app: one body message, then ``http.disconnect`` on demand.
    With ``ahead`` the outbox is bounded and ``send`` waits for the reader."""

    def __init__(self, body: bytes, ahead: int = 0) -> None:
        self._body: bytes | None = body
        self.disconnected = anyio.Event()
        self.messages: asyncio.Queue[Message] = asyncio.Queue(ahead)

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set():
            # Dropped, as an ASGI server drops what is sent to a client that left: the app
            # learns of it from ``receive`` and ends its response normally, so what it runs
            # after the response (a stream's cleanup, its completion record) still runs.
            return
        await self.messages.put(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            # As an ASGI server does, report a disconnect once the response is complete.
            self.disconnected.set()

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            # The inner app failed; the stream reports it as an error or a truncated response.
            await self.messages.put({"type": _DONE, "failed": True})
        else:
            await self.messages.put({"type": _DONE, "failed": False})


def _retrieved(task: asyncio.Future[None]) -> None:
    """Done callback: take the task's exception (if any) so that none goes unretrieved."""
    if not task.cancelled():
        task.exception()


async def _relay_disconnect(outer: Receive, exchange: _InnerExchange) -> None:
    while (await outer())["type"] != "http.disconnect":
        pass
    exchange.disconnected.set()


async def collect_response(
    app: ASGIApp, scope: dict[str, Any], body: bytes, outer: Receive | None = None
) -> BHTTPResponse:
    """Run the inner request to completion and gather the response (known-length framing).
    With ``outer`` (the outer request's ``receive``), the inner app learns of the client
    leaving as a plain request's handler would, so it can stop the backend."""
    exchange = _InnerExchange(body)
    relay = asyncio.ensure_future(_relay_disconnect(outer, exchange)) if outer else None
    try:
        await exchange.run(app, scope)
    finally:
        if relay is not None:
            # Cancelled, not awaited: waiting for it would let every other ready task (the
            # completion record being signed and stored) run before this answer is sealed.
            relay.cancel()
            relay.add_done_callback(_retrieved)
    status, content, failed = 0, bytearray(), True
    headers: tuple[tuple[bytes, bytes], ...] = ()
    while not exchange.messages.empty():
        message = exchange.messages.get_nowait()
        if message["type"] == "http.response.start":
            status, headers = message["status"], _fields(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            content += message.get("body", b"")
        elif message["type"] == _DONE:
            failed = message["failed"]
    if failed or not _final_status(status):
        return error_response(_INTERNAL)
    return BHTTPResponse(status, headers, b"" if _no_content(scope) else bytes(content))


def _final_status(status: int) -> bool:
    """RFC 9292 §3.5.2: a final status Binary HTTP can carry. Anything else the inner app sent is
    its failure, answered inside the encapsulation like any other (RFC 9458 §5.2)."""
    return 200 <= status <= 599


def _no_content(scope: dict[str, Any]) -> bool:
    """RFC 9110 §9.3.2: an answer to HEAD has no content, whatever the app sent; an ASGI
    server drops it for a plain request, so the gateway does too."""
    return bool(scope["method"] == "HEAD")


async def stream_response(
    app: ASGIApp, scope: dict[str, Any], body: bytes, sealer: ChunkedResponseSealer
) -> AsyncGenerator[bytes, None]:
    """Yield the chunked encapsulated response: the nonce, then one sealed chunk per ASGI
    message as the inner app produces it (an indeterminate-length BHTTP response)."""
    yield sealer.response_nonce
    # The inner app starts only once the stream is being consumed, so it never runs orphaned.
    exchange = _InnerExchange(body, ahead=_STREAM_AHEAD)
    task = asyncio.create_task(exchange.run(app, scope))
    encoder = ResponseStreamEncoder()
    started, head_only = False, _no_content(scope)
    try:
        while True:
            message = await exchange.messages.get()
            kind = message["type"]
            if kind == "http.response.start" and _final_status(message["status"]):
                started = True
                yield sealer.seal(encoder.head(message["status"], _fields(message.get("headers", ()))))
            elif kind == "http.response.start":
                yield _sealed_error(sealer, encoder)
                return
            elif kind == "http.response.body" and started:
                if (data := message.get("body", b"")) and not head_only:
                    yield sealer.seal(encoder.body(data))
                if not message.get("more_body", False):
                    yield sealer.seal(encoder.end(), final=True)
                    return
            elif kind == _DONE:
                if not started:
                    yield _sealed_error(sealer, encoder)
                # Otherwise the stream stops without its final chunk: the client sees truncation.
                return
    finally:
        exchange.disconnected.set()
        while not exchange.messages.empty():  # unblock a waiting send: it sees the disconnect next
            exchange.messages.get_nowait()
        await _finish(task)


def _sealed_error(sealer: ChunkedResponseSealer, encoder: ResponseStreamEncoder) -> bytes:
    """The whole internal-error answer, ending the stream."""
    error = error_response(_INTERNAL)
    head = encoder.head(error.status, error.headers) + encoder.body(error.content)
    return sealer.seal(head) + sealer.seal(encoder.end(), final=True)


async def _finish(task: asyncio.Task[None]) -> None:
    """Give the inner app a moment to notice ``http.disconnect``, then cancel it. An inner app
    that is done already is not waited for: waiting, even on a done task, would let every
    other ready task (its completion record) run before the stream's end is sent."""
    if task.done():
        return
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(_DISCONNECT_GRACE_S):
            await asyncio.wait({task})
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
