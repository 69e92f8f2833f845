"""The sealed hot path straight on ASGI.

Every production request is ``POST /.well-known/ohttp-gateway`` with ``message/ohttp-req``.
:func:`gateway_front` serves exactly those without the framework's per-request machinery
(dependency injection, request and response objects), which costs about 0.2 ms a request on
the reference machine. Both it and the framework route call :func:`seal_exchange`, so they
answer alike. The route serves everything else at that resource: key configurations, chunked
exchanges, other spellings of the path and nested (sealed) requests, which it refuses.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog

from proxy.errors import error_envelope
from proxy.ohttp import MediaType, OHTTPError

from ._channel import sealed_channel
from ._dispatch import ASGIApp
from ._errors import GatewayError, error_body
from ._keys import KeyManager
from ._replay import ReplayGuard
from ._routes import DEFAULT_MAX_BODY, GATEWAY_PATH, seal_exchange

__all__ = ["gateway_front"]

_log = structlog.get_logger("sealgate.errors")
_JSON = b"application/json"
_REQUEST, _RESPONSE = MediaType.REQUEST.encode(), MediaType.RESPONSE.encode()
_TOO_LARGE = GatewayError("request_too_large", "encapsulated request too large", 413)
_INTERNAL = msgspec.json.encode(error_envelope("internal error", "api_error", "internal_error"))


class _Gone(Exception):
    """The client disconnected before its request arrived: nothing to answer."""


def _media_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    value = next((v for n, v in headers if n == b"content-type"), b"")
    return value.split(b";")[0].strip().lower()


async def _read(receive: Any, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def gateway_front(
    handler: ASGIApp, app: ASGIApp, keys: KeyManager, guard: ReplayGuard,
    *, max_body_size: int = DEFAULT_MAX_BODY,
) -> ASGIApp:
    """An ASGI handler that serves non-chunked sealed requests itself and passes everything
    else to ``handler``; opened requests are dispatched to ``app`` (module docstring)."""

    async def answer(receive: Any) -> tuple[int, bytes, bytes]:
        body = await _read(receive, max_body_size)
        if body is None:
            return 413, _JSON, error_body(_TOO_LARGE)
        try:
            return 200, _RESPONSE, await seal_exchange(app, body, keys, guard, receive)
        except OHTTPError as err:
            return err.status, _JSON, error_body(err)
        except Exception as exc:
            _log.error("unhandled_error", error_type=type(exc).__name__)
            return 500, _JSON, _INTERNAL

    async def front(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["path"] != GATEWAY_PATH or scope["method"] != "POST"
                or _media_type(scope["headers"]) != _REQUEST
                or sealed_channel(scope) is not None):
            await handler(scope, receive, send)
            return
        try:
            status, media_type, payload = await answer(receive)
        except _Gone:
            return
        headers = [(b"content-type", media_type), (b"content-length", str(len(payload)).encode()),
                   (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return front
