"""The sans-I/O core shared by the sync and async transports: seal a request, open answers."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

import httpx2

from proxy.ohttp import (
    BAD_FIELD_NAME,
    BAD_FIELD_VALUE,
    HOP_BY_HOP_FIELDS,
    BHTTPRequest,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ClientRequestContext,
    KeyConfig,
    MediaType,
    OHTTPError,
    ResponseDecoder,
    decode_response,
    encapsulate_request,
    encode_request,
    end_to_end,
)

from ._errors import SealedTransportError
from ._presealer import Presealer

__all__ = [
    "GatewayClock", "GatewayRejected", "Prepared", "SealedExchange", "StreamOpener", "gateway_failure",
    "open_plain", "seal", "stale_candidate",
]

# Fields the inner request never carries: connection-specific ones (and those ``Connection``
# names), fields of the outer hop (host, length), the client's own Date, and expectations.
GATEWAY_PATH = "/.well-known/ohttp-gateway"
"""Where a gateway takes sealed requests, below the origin it is published at."""
_HOP_BY_HOP = HOP_BY_HOP_FIELDS | {
    b"host",
    b"content-length",
    b"date",
    b"expect",  # RFC 9458 §5.1: a sealed request carries no 100-continue expectation
}
Fields = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class SealedExchange:
    """Set as ``response.extensions["sealgate"]``: what a caller needs to recompute the
    HMAC-SHA256 commitments in the gateway's receipt."""

    commitment_key: bytes = field(repr=False)
    """Exported from this exchange's HPKE context; only the client and the enclave know it."""
    request_body: bytes = field(repr=False)
    """The exact inner request content that was sealed."""
    bhttp_request: bytes = field(repr=False)
    """The exact Binary HTTP inner request that was sealed."""
    chunked: bool
    enc_digest: str
    """Hex SHA-256 of the encapsulated key, the gateway's per-request identifier."""


@dataclass(frozen=True)
class Prepared:
    """A sealed request ready to send, with what is needed to open its answer."""

    outer: httpx2.Request
    exchange: SealedExchange
    context: ClientRequestContext


def wants_stream(request: httpx2.Request, body: bytes) -> bool:
    """OpenAI-style streaming requests (JSON ``"stream": true``) use chunked OHTTP. Decided by
    the body alone, as the gateway reads it whatever its content type (``curl -d`` sends
    form-urlencoded): a stream sealed whole would arrive all at once."""
    if b'"stream"' not in body and b"\\u" not in body:  # the key, literal or escaped
        return False
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


def _field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """A header as Binary HTTP carries it (RFC 9292 §3.6): the name lowercased and the value
    without the spaces and tabs around it, which HTTP/1.1 drops too (RFC 9110 §5.5);
    ``request_invalid`` for a field the gateway would refuse anyway."""
    field = (name.lower(), value.strip(b" \t"))
    if BAD_FIELD_NAME.search(field[0]) or BAD_FIELD_VALUE.search(field[1]) or not field[0]:
        raise SealedTransportError("request_invalid", "a header field is not valid in HTTP")
    return field


class GatewayClock:
    """The gateway's clock as this client last learned it (RFC 9458 §6.5): the inner ``Date``
    of each request is this clock's. A gateway refuses a request dated outside its window as
    ``stale_request``, sealed, with its own ``Date``; that answer is authenticated (only the
    enclave could seal it), so its ``Date`` corrects this client's clock from then on, and the
    refused request, which the gateway did not run, may be sealed again (once)."""

    def __init__(self) -> None:
        self.offset = 0.0
        """Seconds to add to this machine's clock."""

    def now(self) -> float:
        return time.time() + self.offset

    def learn(self, status: int, headers: Fields, content: bytes) -> bool:
        """From an opened (authenticated) inner answer: whether it was a ``stale_request``
        refusal whose ``Date`` moved this clock by more than a second (``Date`` has whole
        seconds), so that sealing the request again may pass."""
        date = _date(status, headers)
        if date is None or b"stale_request" not in content:
            return False
        try:
            code = json.loads(content)["error"]["code"]
            gateway = parsedate_to_datetime(date.decode("latin-1")).timestamp()
        except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
            return False
        if code != "stale_request":
            return False
        offset, self.offset = self.offset, gateway - time.time()
        return abs(self.offset - offset) > 1.0


def _date(status: int, headers: Fields) -> bytes | None:
    """The ``Date`` of a 400 answer, which the gateway's own refusals carry."""
    return next((v for n, v in headers if n == b"date"), None) if status == 400 else None


def stale_candidate(status: int, headers: Fields) -> bool:
    """An inner answer that may be a ``stale_request`` refusal, read whole before it is given
    back (it is a few hundred bytes) so that :class:`GatewayClock` can learn from it."""
    return _date(status, headers) is not None


def _inner(request: httpx2.Request, body: bytes, prefix: bytes, now: float | None) -> BHTTPRequest:
    url = request.url
    headers = [_field(name, value) for name, value in end_to_end(request.headers.raw, _HOP_BY_HOP)]
    # RFC 9458 §6.5: the gateway checks freshness against the inner Date.
    headers.append((b"date", formatdate(now, usegmt=True).encode()))
    return BHTTPRequest(request.method.encode(), url.scheme.encode(), url.netloc,
                        _target(url.raw_path, prefix), tuple(headers), body)


def _prefix(gateway_url: httpx2.URL) -> bytes:
    """The path a gateway is published under: ``/sealgate`` for
    ``https://host/sealgate/.well-known/ohttp-gateway`` (an ingress routes that path to it and
    strips the prefix); empty for a gateway at the root or a relay's own URL."""
    path: bytes = gateway_url.raw_path.split(b"?", 1)[0]
    suffix = GATEWAY_PATH.encode()
    return path.removesuffix(suffix).rstrip(b"/") if path.endswith(suffix) else b""


def _target(raw_path: bytes, prefix: bytes) -> bytes:
    """The inner request's path and query, relative to the gateway: without the prefix it is
    published under, which the ingress strips from the outer request only (the gateway serves
    the inner one at its own root, as it serves the OpenAI API)."""
    if not prefix or not raw_path.startswith(prefix):
        return raw_path
    rest = raw_path[len(prefix):]
    if rest[:1] == b"/":
        return rest
    return b"/" + rest if rest[:1] in (b"?", b"") else raw_path  # else /sealgatex: not under it


def seal(
    request: httpx2.Request,
    body: bytes,
    config: KeyConfig,
    gateway_url: httpx2.URL | str,
    presealer: Presealer | None = None,
    now: float | None = None,
) -> Prepared:
    """Seal ``request`` to ``config`` as an outer POST to ``gateway_url``, with a sender setup
    made ahead of time by ``presealer`` when one is ready; its inner ``Date`` is ``now``
    (this machine's clock when ``None``)."""
    chunked = wants_stream(request, body)
    prepared = presealer.take(config, chunked=chunked) if presealer is not None else None
    try:
        bhttp = encode_request(_inner(request, body, _prefix(httpx2.URL(gateway_url)), now))
        if chunked:
            sealer = ChunkedRequestSealer(config, prepared=prepared)
            sealed, context = sealer.seal(bhttp, final=True), sealer.context
        else:
            sealed, context = encapsulate_request(config, bhttp, prepared=prepared)
    except OHTTPError as exc:
        raise SealedTransportError("enclave_unverified", f"cannot seal to this key ({exc.code})") from exc
    media, accept = (
        (MediaType.CHUNKED_REQUEST, MediaType.CHUNKED_RESPONSE)
        if chunked
        else (MediaType.REQUEST, MediaType.RESPONSE)
    )
    headers = {"content-type": str(media), "accept": str(accept)}
    if chunked:  # the chunked draft (§3): relays should pass chunks on as they come
        headers["incremental"] = "?1"
    outer = httpx2.Request(
        "POST",
        gateway_url,
        headers=headers,
        content=sealed,
        extensions=request.extensions,
    )
    exchange = SealedExchange(
        context.commitment_key, body, bhttp, chunked, hashlib.sha256(context.enc).hexdigest()
    )
    return Prepared(outer, exchange, context)


class GatewayRejected(SealedTransportError):
    """``gateway_rejected``, with the outer status the gateway answered."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__("gateway_rejected", f"gateway answered {status} ({code})")
        self.status = status
        self.gateway_code = code


def gateway_failure(status: int, content: bytes) -> SealedTransportError:
    """The error for a non-200 outer answer, carrying the gateway's error code."""
    code = "unknown"
    try:
        code = str(json.loads(content)["error"]["code"])
    except (ValueError, KeyError, TypeError, RecursionError):  # any relay can answer anything
        pass
    return GatewayRejected(status, code)


# Refusals that mean the client's key configuration is stale: a restarted gateway has new keys,
# and its random one-byte key_id may repeat the old one (then decryption fails instead).
_STALE_KEY = frozenset({"ohttp_unknown_key", "ohttp_decrypt_failed", "ohttp_unsupported_suite"})


def is_stale_key(err: SealedTransportError) -> bool:
    return isinstance(err, GatewayRejected) and err.gateway_code in _STALE_KEY


def _invalid(exc: OHTTPError) -> SealedTransportError:
    return SealedTransportError("response_invalid", f"sealed response rejected ({exc.code})")


def open_plain(prepared: Prepared, content: bytes) -> tuple[int, Fields, bytes]:
    """Open a ``message/ohttp-res`` answer: inner status, headers and body."""
    try:
        response = decode_response(prepared.context.open_response(content))
    except OHTTPError as exc:
        raise _invalid(exc) from exc
    return response.status, response.headers, response.content


class StreamOpener:
    """Opens a ``message/ohttp-chunked-res`` answer as its bytes arrive.

    ``head`` is set once the inner status and headers are in; :meth:`take_body` returns the
    content decoded so far; :meth:`finish` checks the final chunk (truncation is an error).
    """

    def __init__(self, prepared: Prepared) -> None:
        self._opener = ChunkedResponseOpener(prepared.context)
        self._decoder = ResponseDecoder()
        self._body: list[bytes] = []
        self.head: tuple[int, Fields] | None = None
        self.finished = False

    def _decode(self, plaintexts: list[bytes]) -> None:
        for plaintext in plaintexts:
            for event in self._decoder.feed(plaintext):
                if event.kind == "head":
                    self.head = (event.status, event.headers)
                elif event.kind == "body":
                    self._body.append(event.data)

    def feed(self, data: bytes) -> None:
        try:
            self._decode(self._opener.feed(data))
        except OHTTPError as exc:
            raise _invalid(exc) from exc

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self._decode([self._opener.close()])
            self._decoder.close()
        except OHTTPError as exc:
            raise _invalid(exc) from exc
        if self.head is None:
            raise SealedTransportError("response_invalid", "sealed response has no head")

    def take_body(self) -> list[bytes]:
        body, self._body = self._body, []
        return body
