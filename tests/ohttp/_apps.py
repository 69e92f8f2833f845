"""A small Litestar app around the gateway, a loopback server runner and a recording relay.

``RecordingTCPRelay`` is a measurement tool: it forwards bytes unchanged and keeps a copy of
what the client sent, so tests can show that no plaintext crossed that connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from litestar import Litestar, Request, get, post
from litestar.di import Provide
from litestar.response import ServerSentEvent, Stream

from proxy.gateway import KeyManager, ReplayGuard, build_gateway_handlers, gateway_front, sealed_channel

FRONT = True
"""Whether :func:`build_app` serves non-chunked sealed requests through ``gateway_front``."""


@dataclass
class AppState:
    keys: KeyManager = field(default_factory=KeyManager)
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    release: threading.Event = field(default_factory=threading.Event)
    stream_events: list[str] = field(default_factory=list)
    requests: list[bool] = field(default_factory=list)


def _channel_facts(request: Request[Any, Any, Any], body: bytes) -> dict[str, Any]:
    channel = sealed_channel(request.scope)
    facts: dict[str, Any] = {"sealed": channel is not None}
    if channel is not None:
        facts["enc_digest"] = channel.enc_digest
        facts["chunked"] = channel.chunked
        facts["commitment"] = hmac.new(channel.commitment_key, body, hashlib.sha256).hexdigest()
    return facts


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunk(model: str, text: str | None) -> str:
    delta = {"content": text} if text is not None else {}
    finish = None if text is not None else "stop"
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]}
    )


def build_app(state: AppState, *, max_body_size: int | None = None) -> Litestar:
    kwargs = {} if max_body_size is None else {"max_body_size": max_body_size}

    @post("/echo", status_code=200)
    async def echo(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = await request.body()
        state.requests.append(sealed_channel(request.scope) is not None)
        return {"data": json.loads(body or b"null"), **_channel_facts(request, body)}

    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("inner failure")

    @post("/sse", status_code=200)
    async def sse(request: Request[Any, Any, Any]) -> ServerSentEvent:
        sealed = sealed_channel(request.scope) is not None

        async def events() -> AsyncIterator[str]:
            try:
                yield json.dumps({"n": 0, "sealed": sealed})
                # Wait until the client has seen the first event: proves chunk-by-chunk flushing.
                for _ in range(500):
                    if state.release.is_set():
                        break
                    await asyncio.sleep(0.01)
                else:
                    yield json.dumps({"n": -1, "timeout": True})
                for n in range(1, 4):
                    yield json.dumps({"n": n})
                    await asyncio.sleep(0.01)
                for _ in range(300):  # long tail: only a disconnect ends it early
                    await asyncio.sleep(0.01)
                yield json.dumps({"n": 99})
                state.stream_events.append("completed")
            finally:
                state.stream_events.append("closed")

        return ServerSentEvent(events())

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Any:
        payload = await request.json()
        state.requests.append(sealed_channel(request.scope) is not None)
        text = str(payload["messages"][-1]["content"])[::-1]
        if not payload.get("stream"):
            return _completion(payload["model"], text)

        async def chunks() -> AsyncIterator[bytes]:
            for word in text.split(" "):
                yield f"data: {_chunk(payload['model'], word + ' ')}\n\n".encode()
                await asyncio.sleep(0)
            yield f"data: {_chunk(payload['model'], None)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return Stream(chunks(), media_type="text/event-stream")

    app = Litestar(
        route_handlers=[*build_gateway_handlers(**kwargs), echo, boom, sse, chat],
        dependencies={
            "ohttp_keys": Provide(lambda: state.keys, sync_to_thread=False),
            "replay_guard": Provide(lambda: state.guard, sync_to_thread=False),
        },
        debug=False,
    )
    if FRONT:  # as sealgate serve does; tests run both ways (tests/ohttp/conftest.py)
        app.asgi_handler = gateway_front(app.asgi_handler, app, state.keys, state.guard, **kwargs)
    return app


@contextmanager
def serve(app: Any) -> Iterator[int]:
    """Run ``app`` (or a whole ``uvicorn.Config``) on uvicorn on a loopback port in a thread;
    yield the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if not isinstance(app, uvicorn.Config):
        app = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")
    server = uvicorn.Server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def wait_for(condition: Any, seconds: float = 5.0) -> bool:
    """Whether ``condition()`` turns true within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class RecordingTCPRelay:
    """Forwards loopback TCP to ``target_port`` and records the client-to-server bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RecordingTCPRelay:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            try:
                while data := await src.read(65536):
                    if record:
                        self.sent.extend(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
