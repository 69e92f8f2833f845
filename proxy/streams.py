"""Streamed response bodies that end with their response."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

__all__ = ["closing_stream"]


def closing_stream(body: AsyncGenerator[bytes, None], *, first: bytes | None = None,
                   **kwargs: Any) -> Stream:
    """A :class:`Stream` of ``first`` (when given) then ``body``, that closes ``body`` once the
    response is over, however it ended: sent whole, its client gone mid-chunk (Litestar then
    stops iterating but does not close), or failed before its first byte was sent.

    ``body``'s ``finally`` (the backend call closed, the lease released, the completion record
    written) then runs with the response, not when the garbage collector finds it. A generator
    that never started runs no ``finally`` at all, so a body whose settling matters is started
    by its caller (its first item taken and passed as ``first``) before it is returned.
    """
    return _ClosingStream(body if first is None else _resume(first, body), body, **kwargs)


class _ClosingStream(Stream):
    __slots__ = ("_body",)

    def __init__(self, content: AsyncGenerator[bytes, None], body: AsyncGenerator[bytes, None],
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._body = body

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _Closing(super().to_asgi_response(*args, **kwargs), self._body)  # type: ignore[return-value]


class _Closing:
    """The streaming ASGI response, then ``body`` closed: shielded, so a cancelled response
    still settles its stream."""

    __slots__ = ("_body", "_response")

    def __init__(self, response: ASGIResponse, body: AsyncGenerator[bytes, None]) -> None:
        self._response, self._body = response, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._response(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()


async def _resume(first: bytes, body: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    yield first
    async for chunk in body:
        yield chunk
