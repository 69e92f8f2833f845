"""The OHTTP gateway resource (RFC 9458 §5) as Litestar route handlers."""

from __future__ import annotations

import hashlib
from email.utils import formatdate
from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from proxy.ohttp import (
    BHTTPRequest,
    BHTTPResponse,
    ChunkedRequestOpener,
    ChunkedResponseSealer,
    MediaType,
    OHTTPError,
    ServerRequestContext,
    decapsulate_request,
    decode_request,
    encode_response,
)
from proxy.streams import closing_stream

from ._channel import SealedChannel, sealed_channel
from ._dispatch import ASGIApp, Receive, build_scope, collect_response, error_response, stream_response
from ._errors import GatewayError, error_body
from ._keys import KeyManager
from ._replay import ReplayGuard

__all__ = ["DEFAULT_MAX_BODY", "GATEWAY_PATH", "build_gateway_handlers", "seal_exchange"]

GATEWAY_PATH = "/.well-known/ohttp-gateway"
# 1 MiB of inner request plus room for the header, enc, BHTTP framing and AEAD tags.
DEFAULT_MAX_BODY = (1 << 20) + 16 * 1024
_NO_STORE = {"cache-control": "no-store"}
# The chunked draft (§3): a relay should forward each chunk as it comes instead of buffering.
_CHUNKED = {**_NO_STORE, "incremental": "?1"}


def _outer_error(err: OHTTPError | GatewayError, status: int | None = None) -> Response[bytes]:
    return Response(
        error_body(err),
        status_code=status or err.status,
        media_type="application/json",
        headers=_NO_STORE,
    )


def _header(request: BHTTPRequest, name: bytes) -> str | None:
    value = next((v for n, v in request.headers if n.lower() == name), None)
    return value.decode("latin-1") if value is not None else None


async def _admit(
    raw: bytes, context: ServerRequestContext, guard: ReplayGuard
) -> tuple[BHTTPRequest, dict[str, Any]]:
    """Decode the inner request, check freshness and replay, and build its scope.

    Every error here comes after decapsulation, so it is answered sealed (RFC 9458 §5.2).
    """
    try:
        inner = decode_request(raw)
    except OHTTPError as err:
        detail = f"inner request is not valid Binary HTTP ({err.code})"
        raise GatewayError("bad_inner_request", detail) from None
    owner = await guard.identify(_header(inner, b"authorization"))
    guard.check(context.enc, _header(inner, b"date"), owner)
    channel = SealedChannel(
        commitment_key=context.commitment_key,
        enc_digest=hashlib.sha256(context.enc).hexdigest(),
        chunked=context.chunked,
        key_id=context.key_id,
    )
    return inner, build_scope(inner, channel)


def _dated_error(err: GatewayError) -> BHTTPResponse:
    # RFC 9458 §6.5: a rejected request learns the gateway's clock from a Date field.
    error = error_response(err)
    date = formatdate(usegmt=True).encode()
    return BHTTPResponse(error.status, (*error.headers, (b"date", date)), error.content)


async def seal_exchange(app: ASGIApp, body: bytes, keys: KeyManager, guard: ReplayGuard,
                        receive: Receive | None = None) -> bytes:
    """One ``message/ohttp-req`` exchange: open ``body``, dispatch it in-process to ``app``, and
    return the sealed ``message/ohttp-res`` answer; ``receive`` (the outer request's) relays
    the client leaving. Raises :class:`OHTTPError` only for what is answered outside the
    encapsulation (RFC 9458 §5.2)."""
    raw, context = decapsulate_request(body, keys.lookup)
    try:
        inner, scope = await _admit(raw, context, guard)
        response = await collect_response(app, scope, inner.content, receive)
    except GatewayError as err:
        response = _dated_error(err)
    return context.seal_response(encode_response(response))


async def _chunked(
    request: Request[Any, Any, Any], body: bytes, keys: KeyManager, guard: ReplayGuard
) -> Response[Any]:
    opener = ChunkedRequestOpener(keys.lookup)
    chunks = opener.feed(body)
    chunks.append(opener.close())
    if opener.context is None:  # pragma: no cover - close() raises first
        raise OHTTPError("ohttp_malformed", "encapsulated request too short")
    sealer = ChunkedResponseSealer(opener.context)
    try:
        inner, scope = await _admit(b"".join(chunks), opener.context, guard)
    except GatewayError as err:
        sealed = sealer.seal(encode_response(_dated_error(err), indeterminate=True), final=True)
        return Response(
            sealer.response_nonce + sealed, media_type=MediaType.CHUNKED_RESPONSE, headers=_CHUNKED
        )
    stream = stream_response(request.app, scope, inner.content, sealer)
    # Closed with the response: the inner request ends only in the stream's ``finally``.
    return closing_stream(stream, media_type=MediaType.CHUNKED_RESPONSE, headers=_CHUNKED)


def build_gateway_handlers(*, max_body_size: int = DEFAULT_MAX_BODY) -> list[HTTPRouteHandler]:
    """The gateway routes; they take ``ohttp_keys`` and ``replay_guard`` by dependency injection."""

    @get(GATEWAY_PATH, sync_to_thread=False)
    def ohttp_key_configs(ohttp_keys: KeyManager) -> Response[bytes]:
        """RFC 9458 §3.2: the key configurations, cacheable."""
        headers = {"cache-control": "public, max-age=300"}
        return Response(ohttp_keys.key_configs(), media_type=MediaType.KEYS, headers=headers)

    @post(GATEWAY_PATH, status_code=200, request_max_body_size=max_body_size)
    async def ohttp_gateway(
        request: Request[Any, Any, Any], ohttp_keys: KeyManager, replay_guard: ReplayGuard
    ) -> Response[Any]:
        """RFC 9458 §5 and the chunked draft: open, dispatch in-process, seal the answer."""
        if sealed_channel(request.scope) is not None:
            # Whatever spelling of the path routed here, a sealed request never nests.
            nested = GatewayError("bad_inner_request", "sealed requests cannot target the gateway")
            return _outer_error(nested)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in (MediaType.REQUEST, MediaType.CHUNKED_REQUEST):
            unsupported = GatewayError("unsupported_media_type", "expected an OHTTP request", 415)
            return _outer_error(unsupported)
        body = await request.body()
        if len(body) > max_body_size:
            return _outer_error(GatewayError("request_too_large", "encapsulated request too large", 413))
        try:
            if media_type == MediaType.REQUEST:
                sealed = await seal_exchange(request.app, body, ohttp_keys, replay_guard,
                                             request.receive)
                return Response(sealed, media_type=MediaType.RESPONSE, headers=_NO_STORE)
            return await _chunked(request, body, ohttp_keys, replay_guard)
        except OHTTPError as err:
            return _outer_error(err)

    return [ohttp_key_configs, ohttp_gateway]
