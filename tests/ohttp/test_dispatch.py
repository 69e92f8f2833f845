"""In-process dispatch of an opened request: what the inner request leaves to run after its
response (the gateway's completion record) runs after the sealed answer, not before."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.gateway._dispatch import collect_response, stream_response
from proxy.ohttp import ChunkedRequestOpener, ChunkedRequestSealer, ChunkedResponseSealer, GatewayKey

_SCOPE = {"type": "http", "method": "POST"}


class _LeftBehind:
    """Work an inner app leaves to run after its response, and whether it has run yet."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def leave(self) -> None:
        self._tasks.append(asyncio.create_task(self._after()))

    async def _after(self) -> None:
        self.ran.append("after")

    async def settle(self) -> None:
        await asyncio.gather(*self._tasks)


def test_a_sealed_answer_is_collected_before_work_its_inner_request_left_behind() -> None:
    """Collecting the answer never waits on other tasks, so their work never sits on the sealed
    request's path."""
    left = _LeftBehind()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        left.leave()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def outer() -> dict[str, Any]:  # the outer request's receive: its client stays
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def run() -> None:
        response = await collect_response(inner, _SCOPE, b"", outer)
        assert (response.status, response.content, left.ran) == (200, b"ok", [])
        await left.settle()
        assert left.ran == ["after"]

    asyncio.run(run())


def test_a_sealed_stream_ends_before_work_its_inner_request_left_behind() -> None:
    """The same for a chunked answer: its last chunk and its end go out before what the inner
    request left to run afterwards."""
    key = GatewayKey.generate(7)
    request_sealer = ChunkedRequestSealer(key.config)
    opener = ChunkedRequestOpener({7: key}.get)
    opener.feed(request_sealer.seal(b"", final=True))
    opener.close()
    assert opener.context is not None
    left = _LeftBehind()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        left.leave()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def run() -> None:
        stream = stream_response(inner, _SCOPE, b"", ChunkedResponseSealer(opener.context))
        chunks = [chunk async for chunk in stream]
        assert len(chunks) >= 3 and left.ran == []
        await left.settle()
        assert left.ran == ["after"]

    asyncio.run(run())
