"""Any OpenAI-compatible upstream (vLLM, llama.cpp server, a zero-retention provider) over httpx.

Requests are httpx requests sent through aiohttp's connection pool and HTTP/1.1 parser
(``httpx-aiohttp``, the transport the official SDK offers for async use): about half the
per-request cost of httpx's default transport, which matters on the gateway's hot path
(``make bench``).
Streaming is passed through as it arrives: each upstream SSE event becomes one chunk here, with
no buffering beyond the event itself. Upstream error bodies are never relayed (they may echo
content); only their status class is, and whether a 400 says that the request does not fit the
model's context (``context_length_exceeded``, as the OpenAI API answers it). Every document is
checked against the skeleton of its OpenAI shape (the fields the gateway reads or rewrites); one
that does not fit, a stream that is not ``text/event-stream``, or one that ends without
``data: [DONE]`` is a backend error (502) with a fixed message, never the upstream's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, cast

import aiohttp
import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport

from inference._base import GenerationKind, Json
from inference._errors import (
    BackendBusy,
    BackendDisconnected,
    BackendError,
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    ContextLengthExceeded,
)

__all__ = ["OpenAIBackend", "OpenAIConfig", "api_key"]

_PATHS = {"chat": "/chat/completions", "completions": "/completions"}
# The field each path's request holds its prompt in: ``param`` of a prompt that does not fit.
_PROMPT_FIELDS = {"/chat/completions": "messages", "/completions": "prompt", "/embeddings": "input"}
_MALFORMED = "the upstream sent a malformed response"
# The usage counters the OpenAI API defines: all that is relayed from an upstream whose prompt
# cache is shared between tenants (see OpenAIBackend._relayable).
_USAGE_COUNTERS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens",
                             "prompt_tokens_details", "completion_tokens_details"})
_EOL = re.compile(rb"\r\n|\r|\n")  # the only line ends of an event stream (WHATWG HTML §9.2.5)
_MAX_LINE = 16 << 20  # one event's line; a longer one is not an OpenAI chunk
_MAX_BODY = 256 << 20  # one whole answer of embeddings (a batch of float vectors)
# One whole chat or text answer: a few choices of thousands of tokens with 20 alternatives each
# take tens of MiB. Decoded, a JSON answer takes several times its size (up to some 25 times,
# for one made of small objects), so each kind is held to what its answers need.
_MAX_GENERATION = 64 << 20
_DRAIN_S = 1.0  # how long the end of a body is awaited after data: [DONE]
_MAX_RETRY_AFTER = 3600  # the longest wait relayed from an upstream's Retry-After
_MAX_ERROR = 64 << 10  # what is read of a 400's error document, to tell a context overflow
# How upstreams say that a request does not fit the model's context: the OpenAI API's code,
# llama.cpp's error type, and the openings of vLLM's messages, fixed words and numbers (only
# openings match: a message quoting the request is not taken for one by what it quotes).
_CONTEXT_CODE = "context_length_exceeded"
_CONTEXT_TYPE = "exceed_context_size_error"
_CONTEXT_MESSAGE = re.compile(
    r"This model's maximum context length is \d+ tokens"
    r"|'max_tokens' or 'max_completion_tokens' is too large: \d+\. "
    r"This model's maximum context length is \d+ tokens"
    r"|You passed \d+ input (?:tokens|characters) and requested \d+ output tokens\. "
    r"However, the model's context length is only \d+ tokens"
    r"|The decoder prompt \(length \d+\) is longer than the maximum model length of \d+"
    r"|max_(?:completion_)?tokens=\d+ cannot be greater than max_model_len=\d+\. ")
_ERROR_READ_S = 2.0  # the most a 400's error document is waited for


class UpstreamTruncated(BackendError):
    """The upstream's event stream ended without ``data: [DONE]``: the answer may be cut short."""

    code = "upstream_truncated"


# -- the skeleton of each upstream document (validated, then forwarded as decoded) ------------
# Token counts go into signed records: integers every verifier reads exactly (RFC 7493 §2.2).
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


class _Usage(msgspec.Struct):
    prompt_tokens: _Count = 0
    completion_tokens: _Count = 0


class _Document(msgspec.Struct):
    id: str = ""
    created: int = 0
    usage: _Usage | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None


class _ChatChoice(msgspec.Struct):
    message: _Message
    finish_reason: str  # required in a whole answer: only the upstream can say why it ended


class _ChunkChoice(msgspec.Struct):
    # Some providers send choices without a delta (e.g. content-filter annotations).
    delta: _Message | None = None


class _TextChoice(msgspec.Struct):
    text: str


class _Chat(_Document, kw_only=True):
    choices: list[_ChatChoice]


class _ChatChunk(_Document):
    choices: list[_ChunkChoice] = []  # empty or absent in the final usage chunk


class _WholeTextChoice(_TextChoice):
    finish_reason: str


class _Text(_Document, kw_only=True):
    choices: list[_WholeTextChoice]


class _TextChunk(_Document):
    choices: list[_TextChoice] = []


class _Embedding(msgspec.Struct):
    embedding: list[float] | str


class _Embeddings(_Document, kw_only=True):
    data: list[_Embedding]


_WHOLE: dict[GenerationKind, type[_Document]] = {"chat": _Chat, "completions": _Text}
_CHUNK: dict[GenerationKind, type[_Document]] = {"chat": _ChatChunk, "completions": _TextChunk}


def _checked(doc: Any, schema: type[_Document]) -> Json:
    """``doc`` when it fits ``schema``; msgspec's error (which may quote it) is dropped."""
    try:
        msgspec.convert(doc, schema)
    except msgspec.ValidationError:
        raise BackendError(_MALFORMED) from None
    return cast(Json, doc)  # a Struct converts from a JSON object only


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """Settings of an OpenAI-compatible upstream."""

    url: str = "http://127.0.0.1:8000/v1"
    """Base URL including ``/v1``."""
    api_key_env: str = ""
    """Name of the environment variable holding the upstream API key (never the key itself)."""
    timeout_s: float = 120.0
    """Read timeout for one request."""
    connect_timeout_s: float = 5.0
    """Connect timeout."""
    stream_timeout_s: float = 1800.0
    """The most one streamed answer may last, from the request to its last event: each event
    arriving within ``timeout_s`` of the last would otherwise hold the stream (its connection
    and its tenant's place) without end."""
    max_connections: int = 64
    """Connection pool size."""
    cache_salt: bool = False
    """Send each request's cache scope (one per tenant) as ``cache_salt``, which vLLM (0.9 and
    later) mixes into its prefix cache's keys, so tenants never share cached prompt state.
    Only for upstreams that take the field (vLLM); others may refuse it. Without it, an
    upstream with a prefix cache may share it across tenants, so the count of cached prompt
    tokens it reports (``usage.prompt_tokens_details.cached_tokens``) is not relayed: it would
    tell a tenant whether another's prompt began with a guessed text."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s", "stream_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("timeout_s", "connect_timeout_s"):  # the transport cannot take infinity
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number of seconds")
        if self.max_connections < 1:
            raise ValueError("max_connections must be 1 or more")
        check_base_url(self.url)


def check_base_url(url: str) -> None:
    """``ValueError`` unless ``url`` is an ``http://`` or ``https://`` URL with a host: anything
    else (no scheme, another one) started and failed every request as unreachable. The URL is
    not quoted in the message: it may hold credentials."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if (parsed is None or parsed.scheme not in ("http", "https") or not parsed.host
            or url != url.strip()):
        raise ValueError("url must be an http:// or https:// URL with a host")


def api_key(variable: str) -> str:
    """The key in the environment variable ``api_key_env`` names; a backend configured with a
    key does not start without one (it would send, or a vLLM child would accept, requests
    without it)."""
    key = os.environ.get(variable, "")
    if not key:
        raise BackendUnavailable(f"the API key variable {variable} named by api_key_env is not set")
    return key


# Failures that leave the request unsent: the upstream cannot have generated anything.
_UNSENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL,
           aiohttp.NonHttpUrlClientError, aiohttp.ClientHttpProxyError, httpx.ConnectError,
           httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)
_TIMEOUTS = (TimeoutError, httpx.TimeoutException)


# Whether the current request's headers went out to the upstream (``_mapped_errors`` sets a
# fresh flag per request; aiohttp's trace hook, awaited in the request's own task, raises it).
_SENT: contextvars.ContextVar[list[bool]] = contextvars.ContextVar("sealgate_upstream_sent")


async def _headers_sent(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
    flag = _SENT.get(None)
    if flag is not None:
        flag[0] = True


def _session(limits: httpx.Limits, ssl_context: Any) -> aiohttp.ClientSession:
    """The aiohttp session the transport would build itself, with the hook that tells
    whether a request was sent (built on first use, inside the event loop)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    connector = aiohttp.TCPConnector(keepalive_timeout=limits.keepalive_expiry, ssl=ssl_context,
                                     limit=limits.max_connections or 0)
    return aiohttp.ClientSession(connector=connector, trace_configs=[trace])


def _transport_failure(exc: BaseException, sent: bool = True) -> BackendError:
    """What an httpx or aiohttp failure means for the request. The aiohttp transport maps
    every aiohttp connection error to ``httpx.ConnectTimeout`` (a refused connection, a
    pooled one the upstream had closed, one reset mid-answer alike), so the aiohttp error it
    raised from decides, where there is one: whether the request never left (nothing
    generated, nothing charged), the upstream took too long, answered what is not HTTP (an
    unreadable status line or header: a malformed answer), or dropped the connection after
    the request was sent (it may have generated)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    if isinstance(cause, _UNSENT):
        return BackendUnavailable(f"the upstream is unreachable ({type(cause).__name__})")
    if isinstance(cause, _TIMEOUTS):
        if not sent:  # it waited for a free connection to the upstream
            return BackendUnavailable("no connection to the upstream came free in time")
        return BackendTimedOut("the upstream timed out")
    if isinstance(cause, aiohttp.ClientResponseError):
        return BackendError(_MALFORMED)
    return BackendDisconnected(f"the upstream dropped the connection ({type(cause).__name__})")


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Translate httpx failures at the seam (STYLE: foreign exceptions never escape), each
    as it bears on whether the upstream may have generated (``_transport_failure``)."""
    sent = [False]
    _SENT.set(sent)
    try:
        yield
    except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
        raise _transport_failure(exc, sent[0]) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # bad UTF-8 is the second
        raise BackendError(_MALFORMED) from None


async def _lines(chunks: AsyncIterator[bytes], timeout: float,
                 until: float = math.inf) -> AsyncIterator[bytes]:
    """The lines of an event stream, as bytes. Split at CR, LF and CRLF only: JSON may carry
    U+2028, U+2029 and U+0085 unescaped (vLLM and llama.cpp send them raw), where
    ``str.splitlines`` would cut an event in two. Kept as bytes, so UTF-8 is checked strictly
    by the JSON decoder (bad bytes are a malformed answer, as in a whole response). A CR that
    ends one read and an LF that starts the next yield one extra empty line, which is no event.

    A line that has not ended ``timeout`` after the last one did is a timeout: the socket's own
    timeout restarts at every byte, so an upstream dripping them would hold the request
    forever (checked at each read, which that timeout bounds, so no timer runs per event).
    Past ``until`` (the loop's clock) no read is taken: the whole stream is bounded too.
    The start of a line is kept as a list of reads and joined once it ends: linear time.
    """
    clock = asyncio.get_running_loop().time
    pending: list[bytes] = []  # the start of a line that has not ended yet
    held = 0
    deadline = clock() + timeout
    async for chunk in chunks:
        now = clock()
        if now > until:
            raise TimeoutError
        lines = _EOL.split(chunk)
        last = lines.pop()
        if lines:
            if pending:
                lines[0] = b"".join((*pending, lines[0]))
                pending, held = [], 0
            for line in lines:
                yield line
            deadline = clock() + timeout
        elif now > deadline:
            raise TimeoutError
        if last:
            pending.append(last)
            held += len(last)
            if held > _MAX_LINE:
                raise BackendError(_MALFORMED)
    if pending:
        yield b"".join(pending)


async def _body(response: httpx.Response, limit: int | None = None) -> bytes:
    """The whole body, refused past ``limit`` (``_MAX_BODY``) before it can exhaust the
    gateway's memory (answers are never compressed: ``_check_status``)."""
    limit = _MAX_BODY if limit is None else limit
    parts, size = [], 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit:
            raise BackendError(_MALFORMED)
        parts.append(part)
    return b"".join(parts)


def _uncompressed(response: httpx.Response) -> bool:
    """Whether the body comes without a content coding, as the gateway asks (``start``)."""
    encoding: str = response.headers.get("content-encoding", "identity")
    return encoding.strip().lower() == "identity"


async def _check_status(response: httpx.Response, path: str, timeout: float) -> None:
    """Nothing for an answer to read on; else the error its status says, ``path``'s prompt
    field named when a 400 says the prompt does not fit (read within ``timeout``)."""
    if response.status_code < 400:
        if not _uncompressed(response):
            raise BackendError(_MALFORMED)  # it was asked for none (``Accept-Encoding``)
        return
    if response.status_code == 400 and await _exceeds_context(response, min(timeout, _ERROR_READ_S)):
        raise ContextLengthExceeded("this request needs more tokens than the model holds",
                                    _PROMPT_FIELDS[path])
    status = response.status_code
    if status in (400, 413, 422):
        raise BackendRejected(f"the upstream rejected the request (HTTP {status})")
    if status == 429:
        raise BackendBusy("the upstream is rate-limiting requests (HTTP 429)",
                          _retry_after(response.headers.get("retry-after", "")))
    if status in (401, 403, 404):  # the gateway's own settings (url, model, key), not the client's
        raise BackendError(f"the upstream refused the gateway's request (HTTP {status}); the "
                           "gateway's backend settings need attention")
    failure = BackendUnavailable(f"the upstream failed (HTTP {status})")
    if status == 503:  # overloaded or starting: its own wait, not a retry storm after 1 s
        failure.retry_after = _retry_after(response.headers.get("retry-after", ""))
    else:  # reached, and it may have generated (a proxy's 504 after a long generation)
        failure.spent = True
    raise failure


async def _exceeds_context(response: httpx.Response, timeout: float) -> bool:
    """Whether a 400's error document says that the request does not fit the model's context,
    in a form that says only that (``_CONTEXT_CODE``, ``_CONTEXT_TYPE``, ``_CONTEXT_MESSAGE``).
    At most ``_MAX_ERROR`` bytes of it are read, uncompressed, within ``timeout``; a document
    that cannot be read so says nothing, and nothing of any is relayed."""
    if not _uncompressed(response):
        return False
    try:
        async with asyncio.timeout(timeout):
            doc = msgspec.json.decode(await _body(response, _MAX_ERROR))
    except (TimeoutError, BackendError, httpx.HTTPError, aiohttp.ClientError,
            msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    error = doc.get("error", doc) if isinstance(doc, dict) else None  # older vLLM: not wrapped
    if not isinstance(error, dict):
        return False
    message = error.get("message")
    return (error.get("code") == _CONTEXT_CODE or error.get("type") == _CONTEXT_TYPE
            or (isinstance(message, str) and _CONTEXT_MESSAGE.match(message) is not None))


def _retry_after(value: str) -> int:
    """Whole seconds from a ``Retry-After`` given in seconds, within [1, 3600]; 1 for a date
    or anything else."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return 1
    # Past four digits it is past the cap anyway (and int() refuses 4,300 digits or more).
    return _MAX_RETRY_AFTER if len(value) > 4 else min(max(int(value), 1), _MAX_RETRY_AFTER)


class OpenAIBackend:
    """Forwards requests to an OpenAI-compatible HTTP upstream.

    Requests go straight to the httpx transport: the gateway never follows redirects, keeps no
    cookies and sends one fixed credential, so ``httpx.AsyncClient``'s layers for those (a third
    of this backend's cost per request) have nothing to do. URLs are parsed once, at start.
    """

    def __init__(self, name: str, config: OpenAIConfig, *, transport: Any = None) -> None:
        self.name = name
        self._config = config
        self._transport: httpx.AsyncBaseTransport | None = transport
        self._started = False
        self._headers: dict[str, str] = {}
        self._urls: dict[str, httpx.URL] = {}
        self._timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s).as_dict()

    async def start(self) -> None:
        # Uncompressed answers only (``_check_status``): a decoder inflates a whole network read
        # at once, and stacked codings ("gzip, gzip") make kilobytes into gigabytes before any
        # size limit can count them.
        self._headers = {"Content-Type": "application/json", "User-Agent": "sealgate",
                         "Accept-Encoding": "identity"}
        if self._config.api_key_env:
            self._headers["Authorization"] = f"Bearer {api_key(self._config.api_key_env)}"
        base = self._config.url.rstrip("/")
        self._urls = {path: httpx.URL(base + path)
                      for path in (*_PATHS.values(), "/embeddings", "/models")}
        if self._transport is None:
            limits = httpx.Limits(max_connections=self._config.max_connections)
            transport = AiohttpTransport(limits=limits, trust_env=False)
            transport.client = partial(_session, limits, transport.ssl_context)
            self._transport = transport
        self._started = True

    async def close(self) -> None:
        if self._started and self._transport is not None:
            self._started = False
            await self._transport.aclose()

    async def _send(self, method: str, path: str, content: bytes | None = None,
                    timeout: float | None = None) -> httpx.Response:
        """The upstream's response, its body not yet read (the caller closes it)."""
        if not self._started or self._transport is None:
            raise BackendUnavailable(f"backend {self.name!r} is not started")
        timeouts = self._timeout if timeout is None else httpx.Timeout(timeout).as_dict()
        request = httpx.Request(method, self._urls[path], content=content, headers=self._headers,
                                extensions={"timeout": timeouts})
        return await self._transport.handle_async_request(request)

    async def ready(self) -> bool:
        try:
            with _mapped_errors():
                async with asyncio.timeout(2.0):
                    response = await self._send("GET", "/models", timeout=2.0)
                    await response.aclose()
        except BackendError:  # unreachable, timed out, or an answer that is not HTTP
            return False
        return response.status_code == 200

    async def _post(self, path: str, body: Mapping[str, Any], schema: type[_Document],
                    limit: int | None = None) -> Json:
        """One whole answer within ``timeout_s`` in all: the transport's timeouts bound each
        socket operation only, so an upstream that reads slowly or answers a byte at a time
        would otherwise hold the request (and its connection) forever."""
        with _mapped_errors():
            async with asyncio.timeout(self._config.timeout_s):
                response = await self._send("POST", path, msgspec.json.encode(body))
                try:
                    await _check_status(response, path, self._config.timeout_s)
                    content = await _body(response, _MAX_GENERATION if limit is None else limit)
                finally:
                    await response.aclose()
            return self._relayable(_checked(msgspec.json.decode(content), schema))

    def _relayable(self, doc: Json) -> Json:
        """``doc`` with no prefix-cache count unless this upstream's cache is salted per tenant
        (``cache_salt``): a shared cache's hits would tell one tenant what another's prompts
        begin with. Usage keeps only the OpenAI counters, without ``cached_tokens``; any other
        (``prompt_cache_hit_tokens`` and the like, which providers add) is dropped."""
        usage = doc.get("usage")
        if not self._config.cache_salt and isinstance(usage, dict):
            kept = {k: v for k, v in usage.items() if k in _USAGE_COUNTERS}
            details = kept.get("prompt_tokens_details")
            if isinstance(details, dict):
                kept["prompt_tokens_details"] = {k: v for k, v in details.items()
                                                 if k != "cached_tokens"}
            doc["usage"] = kept
        return doc

    def _salted(self, body: Mapping[str, Any], cache_scope: str | None) -> Mapping[str, Any]:
        """``body`` with its ``cache_salt`` when this upstream takes one: the scope, or for a
        request without one a fresh salt, which shares with nobody."""
        if not self._config.cache_salt:
            return body
        return {**body, "cache_salt": cache_scope or secrets.token_hex(16)}

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any], *,
                       cache_scope: str | None = None) -> Json:
        return await self._post(_PATHS[kind], {**self._salted(body, cache_scope), "stream": False},
                                _WHOLE[kind])

    async def embed(self, body: Mapping[str, Any], *, cache_scope: str | None = None) -> Json:
        return await self._post("/embeddings", self._salted(body, cache_scope), _Embeddings,
                                _MAX_BODY)

    async def stream(self, kind: GenerationKind, body: Mapping[str, Any], *,
                     cache_scope: str | None = None) -> AsyncIterator[Json]:
        """The answer's chunks. Its headers arrive within ``timeout_s``, and then each event;
        after ``data: [DONE]`` the end of the body is awaited briefly, so the connection can
        go back to the pool, and anything else there is not waited for."""
        content = msgspec.json.encode({**self._salted(body, cache_scope), "stream": True})
        until = asyncio.get_running_loop().time() + self._config.stream_timeout_s
        with _mapped_errors():
            async with asyncio.timeout(self._config.timeout_s):
                response = await self._send("POST", _PATHS[kind], content)
            try:
                await _check_status(response, _PATHS[kind], self._config.timeout_s)
                media_type = response.headers.get("content-type", "").split(";")[0].strip()
                if media_type.lower() != "text/event-stream":
                    raise BackendError(_MALFORMED)
                lines = _lines(response.aiter_bytes(), self._config.timeout_s, until)
                async for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = msgspec.json.decode(data)
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise BackendUnavailable("the upstream failed mid-stream")
                    yield self._relayable(_checked(chunk, _CHUNK[kind]))
                else:
                    raise UpstreamTruncated("the upstream stream ended before data: [DONE]")
                await _drain(lines)
            finally:
                await response.aclose()


async def _drain(lines: AsyncIterator[bytes]) -> None:
    """Read what follows ``data: [DONE]`` until the body ends, for ``_DRAIN_S`` at most and
    only while it is empty: the answer is complete, so whatever happens here is no error."""
    with contextlib.suppress(TimeoutError, BackendError, httpx.HTTPError, aiohttp.ClientError):
        async with asyncio.timeout(_DRAIN_S):
            async for line in lines:
                if line:
                    return
