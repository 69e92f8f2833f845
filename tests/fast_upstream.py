"""FastUpstream: a measurement tool, not a model. An OpenAI-compatible upstream that answers
instantly with fixed text, so benchmarks measure the gateway's own cost and tests can observe
whether a stream (or, with a ``temperature``, a whole answer) was cancelled; a stream's
``presence_penalty`` holds its first chunk that many seconds, as queueing and prefill do (a whole
answer's, the answer: the time a model takes without ``max_tokens``), and a
positive ``frequency_penalty`` sends a chunk without choices before that wait (prompt-filter
results, as Azure OpenAI sends). Raw ASGI, no framework, to keep its own overhead near zero.

Run standalone: ``python -m tests.fast_upstream PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

# Counters tests poll instead of sleeping: a held whole answer counts in ``whole_started`` when
# its request arrives, then in ``whole_finished`` or ``whole_cancelled``.
STATS: dict[str, int] = {"streams_started": 0, "streams_cancelled": 0, "streams_finished": 0,
                         "streams_cancelled_in_prefill": 0, "whole_started": 0,
                         "whole_cancelled": 0, "whole_finished": 0}


def _chat(model: str, n: int) -> dict[str, Any]:
    return {"id": "chatcmpl-fast", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "ok " * n}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None,
           text: bool = False) -> bytes:
    """A chat chunk, or with ``text`` a legacy completions chunk carrying the delta's content."""
    if text:
        choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None,
                  "finish_reason": finish}
        doc = {"id": "cmpl-fast", "object": "text_completion", "created": int(time.time()),
               "model": model, "choices": [choice]}
    else:
        doc = {"id": "chatcmpl-fast", "object": "chat.completion.chunk",
               "created": int(time.time()), "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def read_body(receive: Any) -> bytes:
    """The whole request body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send: Any, doc: Any, status: int = 200) -> None:
    payload = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


async def _stream(send: Any, receive: Any, model: str, n: int, delay: float,
                  text: bool = False, prefill: float = 0.0, filtered: bool = False) -> None:
    STATS["streams_started"] += 1
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    if filtered:
        results = {"id": "chatcmpl-fast", "object": "chat.completion.chunk", "created": 0,
                   "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]}
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(results).encode()
                    + b"\n\n", "more_body": True})
    if prefill and not await _generating(receive, prefill):  # before the first chunk
        STATS["streams_cancelled_in_prefill"] += 1
        return
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.create_task(watch())
    try:
        if not text:
            await send({"type": "http.response.body", "body": _chunk(model, {"role": "assistant"}),
                        "more_body": True})
        for _ in range(n):
            if disconnected.is_set():
                STATS["streams_cancelled"] += 1
                return
            await send({"type": "http.response.body",
                        "body": _chunk(model, {"content": "ok "}, text=text), "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        usage = {"id": "cmpl-fast" if text else "chatcmpl-fast",
                 "object": "text_completion" if text else "chat.completion.chunk", "created": 0,
                 "model": model, "choices": [],
                 "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
        tail = _chunk(model, {}, "stop", text=text) + b"data: " + json.dumps(usage).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
        STATS["streams_finished"] += 1
    except OSError:
        STATS["streams_cancelled"] += 1
    finally:
        watcher.cancel()


async def _generating(receive: Any, seconds: float) -> bool:
    """Take ``seconds`` as a model would; False when the client disconnects first."""
    try:
        message = await asyncio.wait_for(receive(), seconds)
    except TimeoutError:
        return True
    return bool(message["type"] != "http.disconnect")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stats":
        return await _send_json(send, STATS)
    if path in ("/v1/models", "/health"):
        return await _send_json(send, {"object": "list", "data": [{"id": "fast", "object": "model"}]})
    body = json.loads(await read_body(receive) or b"{}")
    model = body.get("model", "fast")
    n = int(body.get("max_tokens") or 4)
    if path == "/v1/embeddings":
        return await _send_json(send, {"object": "list", "model": model, "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}})
    if path not in ("/v1/chat/completions", "/v1/completions"):
        return await _send_json(send, {"error": {"message": "not found"}}, 404)
    delay = float(body.get("temperature") or 0) / 100  # per token: 10 ms at temperature 1
    if body.get("stream"):
        # presence_penalty, in seconds: time before the first chunk (queueing and prefill);
        # a seed of 1000 or more adds seed/1000 seconds (the penalty stops at 2).
        seed = body.get("seed")
        prefill = float(body.get("presence_penalty") or 0) + (
            seed / 1000 if isinstance(seed, int) and seed >= 1000 else 0)
        return await _stream(send, receive, model, n, delay, text=path == "/v1/completions",
                             prefill=prefill, filtered=float(body.get("frequency_penalty") or 0) > 0)
    held = n * delay + float(body.get("presence_penalty") or 0)
    if held:
        STATS["whole_started"] += 1
        finished = await _generating(receive, held)
        STATS["whole_finished" if finished else "whole_cancelled"] += 1
        if not finished:
            return
    if path == "/v1/completions":
        return await _send_json(send, {"id": "cmpl-fast", "object": "text_completion",
                                       "created": int(time.time()), "model": model,
                                       "choices": [{"index": 0, "text": "ok", "finish_reason": "stop",
                                                    "logprobs": None}],
                                       "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                 "total_tokens": 2}})
    return await _send_json(send, _chat(model, n))


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
