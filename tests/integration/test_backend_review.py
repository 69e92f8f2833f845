"""OpenAIBackend against upstreams only a limit stops: answers too large to hold, upstreams that
read or answer a byte at a time, and streams held open after ``data: [DONE]``. Each ends
within its bound, as a backend error or (after a complete answer) cleanly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import inference._openai as openai_backend
from inference import BackendError, BackendRejected, BackendUnavailable, OpenAIBackend, OpenAIConfig
from tests.integration.faulty_upstream import HANG_UP, HUGE, STALLED, FaultInjectingUpstream
from tests.server import free_port

pytestmark = pytest.mark.timeout(120)

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultInjectingUpstream]:
    with FaultInjectingUpstream() as up:
        yield up


def _run(url: str, timeout_s: float, call: Callable[[OpenAIBackend], Awaitable[Any]],
         stream_timeout_s: float = 1800.0, max_connections: int = 100) -> tuple[Any, float]:
    """``call``'s result (or the exception it raised) and how long it took, on a fresh backend."""

    async def run() -> tuple[Any, float]:
        backend = OpenAIBackend("review", OpenAIConfig(url=url, timeout_s=timeout_s,
                                                       stream_timeout_s=stream_timeout_s,
                                                       max_connections=max_connections))
        await backend.start()
        started = time.monotonic()
        try:
            # A bound for the test itself: without one, these faults would hang it.
            result: Any = await asyncio.wait_for(call(backend), 30)
        except Exception as exc:
            result = exc
        finally:
            took = time.monotonic() - started
            await backend.close()
        return result, took

    return asyncio.run(run())


async def _chunks(backend: OpenAIBackend, model: str) -> list[Any]:
    return [c async for c in backend.stream("chat", {"model": model, "messages": MESSAGES})]


def test_a_compressed_answer_is_refused_unread(upstream: FaultInjectingUpstream) -> None:
    """The backend asks for uncompressed answers: a decoder inflates a whole network read at
    once (stacked codings, "gzip, gzip", made kilobytes into gigabytes before any limit could
    count them), so a compressed answer, however small, is refused before it is read."""
    result, _ = _run(f"{upstream.url}/v1", 10, lambda b: b.generate(
        "chat", {"model": "gzip-bomb", "messages": MESSAGES}))
    assert type(result) is BackendError
    assert str(result) == "backend_error: the upstream sent a malformed response"


@pytest.mark.parametrize("fault", ["huge-answer"])
def test_a_huge_whole_answer_is_refused_not_buffered(upstream: FaultInjectingUpstream,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     fault: str) -> None:
    # A chat answer is held to what chat answers need; embeddings to the larger bound.
    monkeypatch.setattr(openai_backend, "_MAX_GENERATION", HUGE // 2)
    monkeypatch.setattr(openai_backend, "_MAX_BODY", HUGE * 2)
    result, _ = _run(f"{upstream.url}/v1", 10, lambda b: b.generate(
        "chat", {"model": fault, "messages": MESSAGES}))
    assert type(result) is BackendError
    assert str(result) == "backend_error: the upstream sent a malformed response"
    monkeypatch.setattr(openai_backend, "_MAX_GENERATION", HUGE * 2)
    result, _ = _run(f"{upstream.url}/v1", 10, lambda b: b.generate(
        "chat", {"model": fault, "messages": MESSAGES}))
    assert result["choices"][0]["message"]["content"] == "0" * HUGE


@pytest.mark.parametrize("fault", ["drip-answer", "stream-drip-event", "stalled"])
def test_a_slow_upstream_times_out_within_timeout_s(upstream: FaultInjectingUpstream,
                                                    fault: str) -> None:
    """The transport's timeouts restart at every byte read or written: an upstream that drips
    its answer (headers, body or one event, a byte each 50 ms, for many seconds) or never
    reads a large request must still fail after about ``timeout_s``."""
    url = f"{upstream.url}{STALLED if fault == 'stalled' else ''}/v1"
    body = {"model": fault, "messages": MESSAGES, "pad": "x" * (32 << 20) if fault == "stalled" else ""}
    if fault == "stream-drip-event":
        result, took = _run(url, 0.5, lambda b: _chunks(b, fault))
    else:
        result, took = _run(url, 0.5, lambda b: b.generate("chat", body))
    assert isinstance(result, BackendUnavailable), result
    assert str(result) == "backend_unavailable: the upstream timed out"
    assert took < 5, f"took {took:.1f} s with timeout_s=0.5"


def test_a_stream_that_never_ends_is_cut_at_stream_timeout_s(upstream: FaultInjectingUpstream) -> None:
    """Each event arrives well within ``timeout_s``, but the stream never ends: it is cut
    about ``stream_timeout_s`` after the request, having relayed what came before."""
    got: list[Any] = []

    async def relay(backend: OpenAIBackend) -> None:
        async for chunk in backend.stream("chat", {"model": "stream-endless", "messages": MESSAGES}):
            got.append(chunk)

    result, took = _run(f"{upstream.url}/v1", 5, relay, stream_timeout_s=1.0)
    assert isinstance(result, BackendUnavailable), result
    assert str(result) == "backend_unavailable: the upstream timed out"
    assert 1.0 <= took < 3, f"took {took:.1f} s with stream_timeout_s=1"
    assert 5 <= len(got) <= 25, len(got)  # an event each 50 ms, relayed until the cut


@pytest.mark.parametrize("option", ["timeout_s", "connect_timeout_s", "stream_timeout_s",
                                    "max_connections"])
def test_bounds_must_be_positive(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        OpenAIConfig(**{option: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["stream-idle-after-done", "stream-more-after-done"])
def test_a_complete_stream_ends_whatever_follows_done(upstream: FaultInjectingUpstream,
                                                      fault: str) -> None:
    """After ``data: [DONE]`` the answer is complete: an upstream that then keeps the response
    open, idle or still sending, neither holds it back nor turns it into an error."""
    result, took = _run(f"{upstream.url}/v1", 20, lambda b: _chunks(b, fault))
    assert isinstance(result, list) and len(result) == 1, result
    assert took < 5, f"took {took:.1f} s"


def test_a_long_event_line_is_split_in_linear_time() -> None:
    """One long line arriving in many small reads costs about what as many short lines do
    (its start was copied again at every read: quadratic, seconds of a blocked event loop)."""

    async def reads(line: bytes, count: int) -> AsyncIterator[bytes]:
        data = line * count
        for i in range(0, len(data), 256):
            yield data[i:i + 256]

    async def split(line: bytes, count: int) -> float:
        started = time.perf_counter()
        async for _ in openai_backend._lines(reads(line, count), 60):
            pass
        return time.perf_counter() - started

    async def run() -> tuple[float, float]:
        short = await split(b"data: " + b"x" * 250 + b"\n", 1 << 14)  # 4 MiB of short lines
        long = await split(b"data: " + b"x" * ((1 << 22) - 7) + b"\n", 1)  # one 4 MiB line
        return short, long

    short, long = asyncio.run(run())
    # Linear: about the same time for the same bytes; rescanning the line at each of its 16,384
    # pieces takes thousands of times longer.
    assert long < 20 * short + 0.5, f"one long line {long:.2f} s, short lines {short:.2f} s"


@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7), ("0", 1), ("3600", 3600), ("99999", 3600), ("9" * 5000, 3600),  # int() refuses these
    ("Wed, 21 Oct 2026 07:28:00 GMT", 1), ("-5", 1), ("", 1)])
def test_an_upstreams_retry_after_is_read_within_bounds(header: str, seconds: int) -> None:
    assert openai_backend._retry_after(header) == seconds


def test_an_unreachable_upstream_generated_nothing(upstream: FaultInjectingUpstream) -> None:
    """A refused connection never carried the request: 503, and nothing may have been
    generated (no tokens are charged for it). The aiohttp transport maps it to
    ``httpx.ConnectTimeout``, which read as a timeout that may have generated."""
    result, took = _run(f"http://127.0.0.1:{free_port()}/v1", 10, lambda b: b.generate(
        "chat", {"model": "ok", "messages": MESSAGES}))
    assert type(result) is BackendUnavailable and result.spent is False
    assert str(result) == "backend_unavailable: the upstream is unreachable (ClientConnectorError)"
    assert took < 5


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_hangs_up_may_have_generated(upstream: FaultInjectingUpstream,
                                                      stream: bool) -> None:
    """An upstream that read the request and dropped the connection before answering may have
    generated: 503, charged as such, and not called a timeout."""
    def call(backend: OpenAIBackend) -> Awaitable[Any]:
        if stream:
            return _chunks(backend, HANG_UP)
        return backend.generate("chat", {"model": HANG_UP, "messages": MESSAGES})

    result, took = _run(f"{upstream.url}/v1", 10, call)
    assert isinstance(result, BackendUnavailable) and result.spent is True
    assert str(result) == "backend_unavailable: the upstream dropped the connection (ServerDisconnectedError)"
    assert took < 5


@pytest.mark.parametrize("fault", ["context-huge", "context-drip"])
def test_a_400s_document_is_read_within_its_bounds(upstream: FaultInjectingUpstream,
                                                   fault: str) -> None:
    """A 400 is read for whether it says the request does not fit the context, but no more than
    64 KiB of it and for no more than 2 s: one past either bound says nothing (a plain
    rejection), however it goes on, and the request does not wait out ``timeout_s``."""
    result, took = _run(f"{upstream.url}/v1", 30, lambda b: b.generate(
        "chat", {"model": fault, "messages": MESSAGES}))
    assert type(result) is BackendRejected, result
    assert str(result) == "upstream_rejected: the upstream rejected the request (HTTP 400)"
    assert took < 5, f"took {took:.1f} s"


def test_an_answer_that_is_not_http_is_malformed(upstream: FaultInjectingUpstream) -> None:
    """An unreadable status line is a malformed answer (502), not a dropped connection."""
    result, _ = _run(f"{upstream.url}/v1", 10, lambda b: b.generate(
        "chat", {"model": "not-http", "messages": MESSAGES}))
    assert type(result) is BackendError
    assert str(result) == "backend_error: the upstream sent a malformed response"


def test_a_request_that_found_no_free_connection_generated_nothing(
        upstream: FaultInjectingUpstream) -> None:
    """``timeout_s`` also bounds the wait for a free connection: a request that never got one
    (a stream holds the only one) was never sent, so it is unavailable and charges nothing; it
    was taken for a timeout that may have generated."""
    async def behind_a_stream(backend: OpenAIBackend) -> Any:
        stream = backend.stream("chat", {"model": "stream-endless", "messages": MESSAGES})
        try:
            await anext(stream)  # the stream holds the only connection from here
            return await backend.generate("chat", {"model": "ok", "messages": MESSAGES})
        finally:
            await stream.aclose()

    result, took = _run(f"{upstream.url}/v1", 1, behind_a_stream, max_connections=1)
    assert type(result) is BackendUnavailable and result.spent is False
    assert str(result) == "backend_unavailable: no connection to the upstream came free in time"
    assert took < 5
