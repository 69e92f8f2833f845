"""A client that leaves a streamed answer while its first bytes are being sent.

The gateway answers a stream only once the backend's first chunk is in (so a backend that is
down gets a proper 503). A client that goes away then, while a send waits on its full socket
buffer, makes Litestar stop iterating the answer without closing it: the answer's generator
stays suspended and its ``finally`` (backend call closed, tenant's place released, completion
record written) would run only when the garbage collector finds it. The collector is held off
here, so only the gateway's own cleanup can pass. The gateway runs in process on the real
fast upstream, driven over raw ASGI so that the disconnect lands exactly in that window. The
same holds for an answer whose head cannot be sent at all (a fault injected in the server's
send), before the body ever started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config import Settings
from proxy.gateway import GATEWAY_PATH
from proxy.ohttp import (
    BHTTPRequest,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ResponseDecoder,
    decode_key_configs,
    encode_request,
)
from proxy.tenants import TenantStore
from tests.integration.conftest import predicate
from tests.server import Proc

CONFIG = """
allow_plaintext = true

[backends.fast]
type = "openai"
url = "http://127.0.0.1:{port}/v1"

[models."fast-echo"]
backend = "fast"
retention_tier = "attested-zero"
"""
CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "fast-echo", "messages": [{"role": "user", "content": "go"}],
                   "max_tokens": 2000, "temperature": 1.0,  # 20 s upstream, 10 ms a chunk
                   "stream": True}).encode()


def _scope(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    fields = [(b"host", b"gateway"), (b"content-length", str(len(body)).encode())]
    fields += [(k.encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": fields,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "state": {}}


async def _leave(app: Any, scope: dict[str, Any], body: bytes, after: int) -> list[dict[str, Any]]:
    """One request whose client stops reading after ``after`` body messages and then leaves:
    every later send waits, as a server's send does on a full buffer, until the app gives up."""
    gone, first = asyncio.Event(), True
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            await asyncio.sleep(3600)
        sent.append(message)
        if len(sent) > after:
            gone.set()

    await app(scope, receive, send)
    return sent


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """The app's startup and shutdown on this event loop, as a server runs them."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


async def _records(client: httpx.AsyncClient, key: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        response = await client.get(f"/v1/audit/requests/{request_id}",
                                    headers={"Authorization": f"Bearer {key}"})
        found = {r["kind"]: predicate(r["envelope"]) for r in response.json().get("records", [])}
        if "completion" in found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def _plain(app: Any, client: httpx.AsyncClient, key: str) -> str:
    """Plaintext: the client leaves as the response head goes out. Returns the request id."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    sent = await _leave(app, _scope(CHAT, headers, BODY), BODY, after=0)
    assert sent[0]["status"] == 200 and len(sent) == 1
    return dict(sent[0]["headers"])[b"x-request-id"].decode()


class ServerSendFailed(OSError):
    """The fault injected: the server cannot send the response head."""


async def _head_fails(app: Any, client: httpx.AsyncClient, key: str) -> str:
    """Plaintext, as a server whose send fails on the response head (its transport broke):
    the answer's first byte is never sent. Returns the request id."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    started: list[dict[str, Any]] = []
    bodies = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if bodies:
            return bodies.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        started.append(message)
        raise ServerSendFailed("send failed")

    with pytest.raises(Exception) as failed:  # Litestar wraps the fault
        await app(_scope(CHAT, headers, BODY), receive, send)
    chain = [failed.value]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(cause)
    assert any(isinstance(e, ServerSendFailed) for e in chain), failed.value
    assert started[0]["status"] == 200
    return dict(started[0]["headers"])[b"x-request-id"].decode()


async def _sealed(app: Any, client: httpx.AsyncClient, key: str) -> str:
    """Chunked OHTTP: the client leaves once the sealed inner head is in (the outer head, the
    response nonce, the inner head). Returns the request id, read from the inner head."""
    config = decode_key_configs((await client.get(GATEWAY_PATH)).content)[0]
    inner = BHTTPRequest(b"POST", b"http", b"gateway", CHAT.encode(), (
        (b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json"),
        (b"date", formatdate(usegmt=True).encode())), BODY)
    sealer = ChunkedRequestSealer(config)
    outer = sealer.seal(encode_request(inner), final=True)
    scope = _scope(GATEWAY_PATH, {"content-type": "message/ohttp-chunked-req"}, outer)
    sent = await _leave(app, scope, outer, after=2)
    assert sent[0]["status"] == 200 and len(sent) == 3
    opener = ChunkedResponseOpener(sealer.context)
    plain = b"".join(c for m in sent[1:] for c in opener.feed(m["body"]))
    head = ResponseDecoder().feed(plain)[0]
    assert head.status == 200
    return dict(head.headers)[b"x-request-id"].decode()


@contextlib.contextmanager
def _no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("leave", [_plain, _sealed, _head_fails], ids=["plain", "sealed", "head_fails"])
def test_client_leaving_a_stream_while_it_is_sent_ends_it(tmp_path: Path, fast_upstream: Proc,
                                                           leave: Any) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(port=fast_upstream.port))
    settings = Settings.load(config, env={"SEALGATE_DATA_DIR": str(tmp_path / "data")})
    tenants = TenantStore(settings.tenants_url)
    tenant = tenants.create_tenant("acme")
    key = tenants.create_key("acme")[1]
    tenants.close()
    app = create_app(settings)
    limiter = app.state["services"].openai.limiter
    before = httpx.get(f"{fast_upstream.url}/stats").json()

    async def scenario() -> tuple[dict[str, Any], int]:
        async with _lifespan(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://gateway") as client:
            request_id = await leave(app, client, key)
            in_flight = limiter.in_flight(tenant.id)
            return await _records(client, key, request_id), in_flight

    with _no_collector():
        records, in_flight = asyncio.run(scenario())
    completion = records.get("completion")
    assert completion is not None, "the completion record was not written"
    assert completion["abort_reason"] == "client_disconnected" and completion["status"] == 200
    assert records["intent"]["stream"] is True
    assert in_flight == 0, "the tenant's place was still held after the response ended"
    deadline = time.monotonic() + 10
    while (after := httpx.get(f"{fast_upstream.url}/stats").json())["streams_cancelled"] \
            == before["streams_cancelled"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after["streams_cancelled"] == before["streams_cancelled"] + 1, "the backend went on"
    assert after["streams_finished"] == before["streams_finished"]
