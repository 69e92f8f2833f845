"""``httpx2`` transports that seal every request to a verified enclave key (RFC 9458).

Both transports are thin I/O loops around the shared sans-I/O core in ``_core``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import httpx2

from proxy.ohttp import MediaType

from ._core import (
    Fields,
    GatewayClock,
    Prepared,
    StreamOpener,
    gateway_failure,
    is_stale_key,
    open_plain,
    seal,
    stale_candidate,
)
from ._errors import SealedTransportError
from ._keysource import KeySource
from ._presealer import Presealer

__all__ = ["MAX_REFUSAL_BYTES", "MAX_SEALED_RESPONSE_BYTES", "AsyncSealedTransport",
           "SealedTransport"]

# What is read of an answer before it is authenticated: the relay and the ingress in between
# are not trusted, and neither is what they say a body's length is.
MAX_SEALED_RESPONSE_BYTES = (256 << 20) + (64 << 10)
"""A whole (not chunked) sealed answer: the gateway's largest answer (256 MiB, a batch of
float embeddings) and its sealing."""
MAX_REFUSAL_BYTES = 64 << 10
"""A refusal (any status but 200): an error document, unauthenticated, read for its code."""


def _too_large(limit: int) -> SealedTransportError:
    return SealedTransportError("response_invalid", f"gateway answer larger than {limit} bytes")


def _declared(response: httpx2.Response, limit: int) -> None:
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)


def _grow(body: bytearray, chunk: bytes, limit: int) -> None:
    body += chunk
    if len(body) > limit:
        raise _too_large(limit)


def _read(response: httpx2.Response, limit: int) -> bytes:
    """The whole body of ``response``, refused past ``limit`` bytes before more is read."""
    _declared(response, limit)
    return _whole(response.iter_bytes(), limit)


async def _aread(response: httpx2.Response, limit: int) -> bytes:
    _declared(response, limit)
    return await _awhole(response.aiter_bytes(), limit)


def _whole(stream: Iterable[bytes], limit: int) -> bytes:
    """All of ``stream``, refused past ``limit`` bytes before more is read."""
    body = bytearray()
    for piece in stream:
        _grow(body, piece, limit)
    return bytes(body)


async def _awhole(stream: AsyncIterable[bytes], limit: int) -> bytes:
    body = bytearray()
    async for piece in stream:
        _grow(body, piece, limit)
    return bytes(body)


def _response(
    request: httpx2.Request,
    prepared: Prepared,
    head: tuple[int, Fields],
    stream: httpx2.SyncByteStream | httpx2.AsyncByteStream,
) -> httpx2.Response:
    status, headers = head
    return httpx2.Response(
        status,
        headers=list(headers),
        stream=stream,
        request=request,
        extensions={"sealgate": prepared.exchange},
    )


def _failure(keys: KeySource, status: int, content: bytes) -> SealedTransportError:
    """The error for a refused request. When the refusal says the key is stale (unknown
    ``key_id``, decryption failed, suite not offered) the key is dropped, so the next request
    verifies the gateway's identity again; this one is not resent, because the refusal is
    unauthenticated and a relay could claim it for a request the gateway did run."""
    error = gateway_failure(status, content)
    if is_stale_key(error):
        keys.invalidate()
    return error


def _check_media(response: httpx2.Response, chunked: bool) -> None:
    expected = MediaType.CHUNKED_RESPONSE if chunked else MediaType.RESPONSE
    # Media types are case-insensitive (RFC 9110 §8.3.1): a relay may write them otherwise.
    if response.headers.get("content-type", "").split(";")[0].strip().lower() != expected:
        raise SealedTransportError("response_invalid", "gateway answer has the wrong media type")


class _SyncBody(httpx2.SyncByteStream):
    def __init__(self, opener: StreamOpener, rest: Iterator[bytes], outer: httpx2.Response) -> None:
        self._opener, self._rest, self._outer = opener, rest, outer

    def __iter__(self) -> Iterator[bytes]:
        yield from self._opener.take_body()
        for data in self._rest:
            self._opener.feed(data)
            yield from self._opener.take_body()
        self._opener.finish()
        yield from self._opener.take_body()

    def close(self) -> None:
        self._outer.close()


class _AsyncBody(httpx2.AsyncByteStream):
    def __init__(self, opener: StreamOpener, rest: AsyncIterator[bytes], outer: httpx2.Response) -> None:
        self._opener, self._rest, self._outer = opener, rest, outer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._opener.take_body():
            yield piece
        async for data in self._rest:
            self._opener.feed(data)
            for piece in self._opener.take_body():
                yield piece
        self._opener.finish()
        for piece in self._opener.take_body():
            yield piece

    async def aclose(self) -> None:
        await self._outer.aclose()


class SealedTransport(httpx2.BaseTransport):
    """Seals each request to the enclave and opens the answer; wraps an ``inner`` transport.

    ``OpenAI(http_client=httpx2.Client(transport=SealedTransport(...)))`` works unchanged;
    streaming requests (JSON ``"stream": true``) use chunked OHTTP and are decrypted chunk by
    chunk as they arrive. If ``key_source`` cannot give a verified key, nothing is sent.
    The HPKE sender setup for the next request is made in the background (:class:`Presealer`).
    The inner response headers are kept; ``response.extensions["sealgate"]`` is the
    :class:`SealedExchange` (commitment key and the exact sealed request).
    """

    def __init__(
        self,
        inner: httpx2.BaseTransport | None = None,
        *,
        gateway_url: str,
        key_source: KeySource,
    ) -> None:
        self._inner = inner or httpx2.HTTPTransport()
        self._gateway_url = httpx2.URL(gateway_url)  # parsed once, not per request
        self._keys = key_source
        self._presealer = Presealer()
        self.clock = GatewayClock()
        """The gateway's clock as its ``stale_request`` answers told it (every inner ``Date``)."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        response, stale = self._send(request, body)
        if stale:  # refused unrun for its Date: sealed again on the corrected clock
            response.close()
            response, _ = self._send(request, body)
        return response

    def _send(self, request: httpx2.Request, body: bytes) -> tuple[httpx2.Response, bool]:
        """The opened answer, and whether it was a ``stale_request`` the clock learned from."""
        config = self._keys.key_config()
        prepared = seal(request, body, config, self._gateway_url, self._presealer, self.clock.now())
        outer = self._inner.handle_request(prepared.outer)
        if outer.status_code == 200:
            return self._open(request, prepared, outer)
        try:
            raise _failure(self._keys, outer.status_code, _read(outer, MAX_REFUSAL_BYTES))
        finally:
            outer.close()

    def _open(self, request: httpx2.Request, prepared: Prepared,
              outer: httpx2.Response) -> tuple[httpx2.Response, bool]:
        try:
            _check_media(outer, prepared.exchange.chunked)
            if not prepared.exchange.chunked:
                status, headers, content = open_plain(prepared, _read(outer, MAX_SEALED_RESPONSE_BYTES))
                outer.close()
                return (_response(request, prepared, (status, headers), httpx2.ByteStream(content)),
                        self.clock.learn(status, headers, content))
            opener = StreamOpener(prepared)
            rest = iter(outer.stream)  # type: ignore[arg-type]
            for data in rest:
                opener.feed(data)
                if opener.head is not None:
                    break
            else:
                opener.finish()
            assert opener.head is not None
            stream = _SyncBody(opener, rest, outer)
            if stale_candidate(*opener.head):  # a refusal, a few hundred bytes: read whole
                content = _whole(stream, MAX_REFUSAL_BYTES)
                outer.close()
                return (_response(request, prepared, opener.head, httpx2.ByteStream(content)),
                        self.clock.learn(*opener.head, content))
            return _response(request, prepared, opener.head, stream), False
        except BaseException:
            outer.close()
            raise

    def close(self) -> None:
        self._presealer.close()
        self._inner.close()


class AsyncSealedTransport(httpx2.AsyncBaseTransport):
    """The asyncio twin of :class:`SealedTransport`, on the same core."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport | None = None,
        *,
        gateway_url: str,
        key_source: KeySource,
    ) -> None:
        self._inner = inner or httpx2.AsyncHTTPTransport()
        self._gateway_url = httpx2.URL(gateway_url)  # parsed once, not per request
        self._keys = key_source
        self._presealer = Presealer()
        self.clock = GatewayClock()
        """The gateway's clock as its ``stale_request`` answers told it (every inner ``Date``)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        response, stale = await self._send(request, body)
        if stale:  # refused unrun for its Date: sealed again on the corrected clock
            await response.aclose()
            response, _ = await self._send(request, body)
        return response

    async def _send(self, request: httpx2.Request, body: bytes) -> tuple[httpx2.Response, bool]:
        config = await self._keys.akey_config()
        prepared = seal(request, body, config, self._gateway_url, self._presealer, self.clock.now())
        outer = await self._inner.handle_async_request(prepared.outer)
        if outer.status_code == 200:
            return await self._open(request, prepared, outer)
        try:
            raise _failure(self._keys, outer.status_code, await _aread(outer, MAX_REFUSAL_BYTES))
        finally:
            await outer.aclose()

    async def _open(
        self, request: httpx2.Request, prepared: Prepared, outer: httpx2.Response
    ) -> tuple[httpx2.Response, bool]:
        try:
            _check_media(outer, prepared.exchange.chunked)
            if not prepared.exchange.chunked:
                content_bytes = await _aread(outer, MAX_SEALED_RESPONSE_BYTES)
                status, headers, content = open_plain(prepared, content_bytes)
                await outer.aclose()
                return (_response(request, prepared, (status, headers), httpx2.ByteStream(content)),
                        self.clock.learn(status, headers, content))
            opener = StreamOpener(prepared)
            rest = aiter(outer.stream)  # type: ignore[arg-type]
            while opener.head is None:
                data = await anext(rest, None)
                if data is None:
                    opener.finish()
                    break
                opener.feed(data)
            assert opener.head is not None
            stream = _AsyncBody(opener, rest, outer)
            if stale_candidate(*opener.head):  # a refusal, a few hundred bytes: read whole
                content = await _awhole(stream, MAX_REFUSAL_BYTES)
                await outer.aclose()
                return (_response(request, prepared, opener.head, httpx2.ByteStream(content)),
                        self.clock.learn(*opener.head, content))
            return _response(request, prepared, opener.head, stream), False
        except BaseException:
            await outer.aclose()
            raise

    async def aclose(self) -> None:
        self._presealer.close()
        await self._inner.aclose()
