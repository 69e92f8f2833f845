"""FaultInjectingUpstream: an OpenAI-compatible upstream on loopback (in a thread) that
misbehaves on purpose, to check the gateway's backend seam.

The fault is the model name the gateway forwards, so one upstream serves a gateway with one
route per fault. Every malformed answer quotes the request body it got, so a test can check
that nothing of it reaches the client or the gateway's logs. ``received`` keeps every request
body, to check what the gateway forwards.
"""

from __future__ import annotations

import gzip
import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback import LoopbackHTTPServer

_USAGE = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
CACHED_DETAILS = {"cached_tokens": 4, "audio_tokens": 0}
"""An upstream's report that part of the prompt came from its prefix cache."""
CACHE_COUNTERS = {"prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 1}
"""The same, in counters some providers (DeepSeek) add to usage beside OpenAI's."""
SEPARATORS = "one\u2028two\u2029three\x85four"
"""Content that JSON may carry unescaped, and which ``str.splitlines`` would split at."""


def _chat(**changes: Any) -> dict[str, Any]:
    doc = {"id": "chatcmpl-faulty", "object": "chat.completion", "created": 1, "model": "m",
           "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "ok"}}], "usage": _USAGE}
    return {**doc, **changes}


def _chunk(**changes: Any) -> dict[str, Any]:
    doc = {"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]}
    return {**doc, **changes}


def _whole(echo: str) -> dict[str, Any]:
    """Non-streamed faults: the JSON answer each model name gets."""
    return {
        "ok": _chat(),
        "ok-cached": _chat(usage={**_USAGE, "prompt_tokens_details": CACHED_DETAILS,
                                  **CACHE_COUNTERS}),
        "ok-uncounted": {k: v for k, v in _chat().items() if k != "usage"},
        "ok-logprobs": _chat(choices=[{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "ok"},
                                       "logprobs": {"content": []}}]),
        # Well formed though bare: what the OpenAI shape requires and only position and role
        # can supply (choice index, message role; an embedding's index and object).
        "ok-bare": _chat(choices=[{"finish_reason": "stop", "message": {"content": "ok"}}]),
        "ok-bare-embeddings": {"data": [{"embedding": [0.5, 0.25]}, {"embedding": [0.125]}]},
        "no-finish-reason": _chat(choices=[{"index": 0, "message": {"role": "assistant",
                                                                    "content": "ok"}}]),
        "choices-not-objects": _chat(choices=[echo]),
        "usage-not-object": _chat(usage=[1, 2, echo]),
        "message-not-object": _chat(choices=[{"index": 0, "message": echo}]),
        "negative-tokens": _chat(usage={"prompt_tokens": -1, "completion_tokens": 2}),
        "fractional-tokens": _chat(usage={"prompt_tokens": 1, "completion_tokens": 2.5}),
        "error-as-200": {"error": {"message": echo}},
        "invalid-utf8": _chat(),  # sent with a byte that is not UTF-8 inside its id
    }


def _events(echo: str) -> dict[str, list[Any]]:
    """Streamed faults: the SSE events each model name gets (``None`` ends without [DONE])."""
    usage = _chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 3})
    return {
        "ok": [_chunk(), usage, "[DONE]"],
        "ok-cached": [_chunk(), {**usage, "usage": {**usage["usage"], **CACHE_COUNTERS,
                                                   "prompt_tokens_details": CACHED_DETAILS}},
                      "[DONE]"],
        # Well formed though unusual: choices without a delta (as content-filter annotations).
        "ok-annotated": [_chunk(), _chunk(choices=[{"index": 0, "content_filter_results": {}}]),
                         _chunk(choices=[{"index": 0, "delta": None}]), usage, "[DONE]"],
        # A field no chunk has, holding a string (passed on as sent).
        "ok-stray-message": [_chunk(choices=[{"index": 0, "delta": {"content": "ok"},
                                              "message": "x"}]), usage, "[DONE]"],
        # Well formed though unlike OpenAI: ids without its prefix, changing per chunk, no
        # created, and the usage on the last content chunk.
        "ok-unprefixed": [{k: v for k, v in _chunk(id=f"gen-{i}").items() if k != "created"}
                          for i in range(2)] + [
            {**_chunk(id="gen-2", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
             "usage": {"prompt_tokens": 5, "completion_tokens": 2}}, "[DONE]"],
        # Choices without their index (the OpenAI shape requires one).
        "ok-no-index": [_chunk(choices=[{"delta": {"content": "a"}, "finish_reason": None}]),
                        usage, "[DONE]"],
        # Raw U+2028/U+2029/U+0085 (as vLLM and llama.cpp send them), CRLF line ends.
        "ok-separators": [_chunk(choices=[{"index": 0, "delta": {"content": SEPARATORS},
                                           "finish_reason": None}]), "[DONE]"],
        "stream-invalid-utf8": [_chunk(), _chunk(id="chatcmpl-bad"), "[DONE]"],
        "stream-fractional-usage": [_chunk(), _chunk(choices=[], usage={"completion_tokens": 3.5}),
                                    "[DONE]"],
        "stream-bad-chunk": [_chunk(), _chunk(choices=[echo]), "[DONE]"],
        "stream-truncated": [_chunk(), _chunk()],
        "stream-error-event": [_chunk(), {"error": {"message": echo}}],
    }


def _rejections(echo: str) -> dict[str, dict[str, Any]]:
    """400 answers: each way upstreams say that a request does not fit the model's context
    (the OpenAI API, llama.cpp's server, vLLM's messages over its versions, wrapped or not),
    quoting the request after the words that say so; and a refusal that quotes those words
    only after the request."""
    too_long = "This model's maximum context length is 1024 tokens."
    return {
        "context-openai": {"error": {
            "message": f"{too_long} However, your messages resulted in 3000 tokens. {echo}",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
        "context-llamacpp": {"error": {
            "code": 400, "message": f"request (3001 tokens) exceeds the available context size "
                                    f"(1024 tokens), try increasing it {echo}",
            "type": "exceed_context_size_error", "n_prompt_tokens": 3001, "n_ctx": 1024}},
        "context-vllm": {"error": {
            "message": f"{too_long} However, you requested 3010 tokens (3000 in the messages, 10 "
                       f"in the completion). Please reduce the length of the messages. {echo}",
            "type": "BadRequestError", "param": None, "code": 400}},
        "context-vllm-output": {
            "object": "error", "message": "'max_tokens' or 'max_completion_tokens' is too large: "
                                          "2000. This model's maximum context length is 1024 "
                                          f"tokens and your request has 30 input tokens. {echo}",
            "type": "BadRequestError", "param": None, "code": 400},
        "context-vllm-renderer": {"error": {
            "message": "You passed 3000 input tokens and requested 10 output tokens. However, the "
                       "model's context length is only 1024 tokens, resulting in a maximum input "
                       f"length of 1014 tokens. {echo} (parameter=input_tokens, value=3000)",
            "type": "BadRequestError", "param": "input_tokens", "code": 400}},
        "context-vllm-params": {"error": {
            "message": f"max_tokens=2000 cannot be greater than max_model_len=1024. Please request "
                       f"fewer output tokens. {echo}",
            "type": "BadRequestError", "param": "max_tokens", "code": 400}},
        REJECTED: {"error": {"message": f"invalid value {echo}: {too_long}",
                             "type": "BadRequestError", "param": None, "code": 400}},
    }


REJECTED = "rejected-quoting"
"""The upstream answers 400 quoting the request, and then words that say it is too long."""
CONTEXT_EXCEEDED = tuple(sorted(m for m in _rejections("") if m != REJECTED))
"""Model names the upstream answers with a 400 saying the request does not fit the context."""
STATUS_FAULTS = {"status-401": (401, None), "status-404": (404, None),
                 "status-500": (500, None), "status-503": (503, "30"), "status-504": (504, None)}
"""Model names the upstream answers with that status (and ``Retry-After``), quoting the request."""
BUSY = "rate-limited"
"""The upstream answers 429 with ``Retry-After: 7`` (and the request quoted in its message)."""
WHOLE_FAULTS = tuple(sorted(m for m in _whole("") if not m.startswith("ok")))
STREAM_FAULTS = (*sorted(m for m in _events("") if not m.startswith("ok")), "stream-as-json")
MODELS = ("ok", "ok-cached", "ok-uncounted", "ok-annotated", "ok-logprobs", "ok-unprefixed", "ok-no-index",
          "ok-separators", "ok-bare", "ok-bare-embeddings", "ok-stray-message", BUSY, REJECTED,
          *CONTEXT_EXCEEDED, *WHOLE_FAULTS, *STREAM_FAULTS, *STATUS_FAULTS)
"""Model names to route to the upstream: each is its fault (``ok`` answers properly)."""


HANG_UP = "hang-up"
"""The upstream reads the whole request, then closes the connection without a byte of answer
(as one that crashed while generating)."""
LIMIT_FAULTS = ("huge-answer", "gzip-bomb", "drip-answer", "stream-drip-event",
                "stream-endless", "stream-idle-after-done", "stream-more-after-done", HANG_UP,
                "context-huge", "context-drip", "not-http")
"""Faults only a limit (of size or time) stops, or none, for tests of the backend itself: well
formed but huge, sent a byte at a time, streamed without end (an event each 50 ms), held open
after ``data: [DONE]``, or never answered (``HANG_UP``); a 400 saying the request does not
fit the context in a document past 64 KiB, or sent a byte at a time; an answer whose status
line is not HTTP (``not-http``). Not in ``MODELS``."""
STALLED = "/stalled"
"""Base path under which the upstream never reads a request (its body fills the socket)."""
HUGE = 4 << 20
"""Size of the content of ``huge-answer`` and ``gzip-bomb`` (the latter compresses it)."""


def _limit_fault(handler: BaseHTTPRequestHandler, fault: str) -> None:
    """Answer ``fault`` of ``LIMIT_FAULTS``; a client that leaves meanwhile ends it."""
    sse = b"data: " + json.dumps(_chunk()).encode() + b"\n\n"

    def head(media_type: str, *extra: tuple[str, str]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", media_type)
        for name, value in extra:
            handler.send_header(name, value)
        handler.end_headers()

    def drip(payload: bytes) -> None:
        for i in range(len(payload)):
            handler.wfile.write(payload[i:i + 1])
            handler.wfile.flush()
            time.sleep(0.05)

    overflow = json.dumps({"error": {"code": "context_length_exceeded", "type": "invalid_request_error",
                                     "message": "This model's maximum context length is 1024 tokens"}})
    try:
        if fault == HANG_UP:
            handler.close_connection = True
        elif fault == "not-http":
            handler.wfile.write(b"HTTP/1.1 abc\r\n\r\n")
            handler.close_connection = True
        elif fault == "context-huge":
            answer = (overflow[:-2] + " " * (96 << 10) + overflow[-2:]).encode()
            handler.send_response(400)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
        elif fault == "context-drip":
            handler.send_response(400)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            drip(overflow.encode())
        elif fault in ("huge-answer", "gzip-bomb"):
            answer = json.dumps(_chat(choices=[{"index": 0, "finish_reason": "length", "message": {
                "role": "assistant", "content": "0" * HUGE}}])).encode()
            if fault == "gzip-bomb":
                head("application/json", ("Content-Encoding", "gzip"))
                answer = gzip.compress(answer)
            else:
                head("application/json")
            handler.wfile.write(answer)
        elif fault == "drip-answer":
            head("application/json")
            drip(json.dumps(_chat()).encode())
        elif fault == "stream-drip-event":
            head("text/event-stream")
            drip(sse + b"data: [DONE]\n\n")
        elif fault == "stream-endless":
            head("text/event-stream")
            for _ in range(2400):  # two minutes: longer than any test waits
                handler.wfile.write(sse)
                handler.wfile.flush()
                time.sleep(0.05)
        else:
            head("text/event-stream")
            handler.wfile.write(sse + b"data: [DONE]\n\n")
            handler.wfile.flush()
            for _ in range(200):
                if fault == "stream-more-after-done":
                    handler.wfile.write(b": still here\n\n" + sse)
                    handler.wfile.flush()
                time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        pass


class FaultInjectingUpstream(LoopbackHTTPServer):
    """``with FaultInjectingUpstream() as up:`` serves ``up.url`` until the block ends."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, media_type: str, payload: bytes, status: int = 200,
                      *extra: tuple[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._send("application/json", b'{"object": "list", "data": []}')

            def do_POST(self) -> None:
                if self.path.startswith(STALLED):
                    time.sleep(10)
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                upstream.received.append(body)
                fault, echo = body.get("model", "ok"), raw.decode()
                if fault in LIMIT_FAULTS:
                    _limit_fault(self, fault)
                elif fault in (rejections := _rejections(echo)):
                    self._send("application/json", json.dumps(rejections[fault]).encode(), 400)
                elif fault in STATUS_FAULTS:
                    status, wait = STATUS_FAULTS[fault]
                    self._send("application/json", json.dumps({"error": {"message": echo}}).encode(),
                               status, *((("Retry-After", wait),) if wait else ()))
                elif fault == BUSY:
                    self._send("application/json", json.dumps({"error": {"message": echo}}).encode(),
                               429, ("Retry-After", "7"))
                elif not body.get("stream"):
                    answer = json.dumps(_whole(echo)[fault]).encode()
                    if fault == "invalid-utf8":
                        answer = answer.replace(b"chatcmpl-faulty", b"chatcmpl-\xff")
                    self._send("application/json", answer)
                elif fault == "stream-as-json":
                    self._send("application/json", json.dumps(_chat()).encode())
                else:
                    events = _events(echo)[fault]
                    end = b"\r\n\r\n" if fault == "ok-separators" else b"\n\n"
                    stream = b"".join(
                        b"data: " + (e if isinstance(e, str) else json.dumps(e, ensure_ascii=False))
                        .encode() + end for e in events)
                    if fault == "stream-invalid-utf8":
                        stream = stream.replace(b"chatcmpl-bad", b"chatcmpl-\xff")
                    self._send("text/event-stream", stream)

        return Handler
