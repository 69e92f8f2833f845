"""Oblivious HTTP (RFC 9458), chunked OHTTP (draft-ietf-ohai-chunked-ohttp) and Binary HTTP
(RFC 9292) over HPKE (RFC 9180). Pure: no I/O, only bytes in and bytes out.

Client: :func:`encapsulate_request` / :class:`ChunkedRequestSealer`, then
``ClientRequestContext.open_response`` / :class:`ChunkedResponseOpener`.
Gateway: :func:`decapsulate_request` / :class:`ChunkedRequestOpener`, then
``ServerRequestContext.seal_response`` / :class:`ChunkedResponseSealer`.
Both contexts expose ``commitment_key``, exported from the exchange's HPKE context.
"""

from __future__ import annotations

from enum import StrEnum

from ._bhttp import (
    BAD_FIELD_NAME,
    BAD_FIELD_VALUE,
    HOP_BY_HOP_FIELDS,
    BHTTPRequest,
    BHTTPResponse,
    InformationalResponse,
    ResponseStreamEncoder,
    decode_request,
    encode_request,
    encode_response,
    end_to_end,
)
from ._bhttp_decoder import ResponseDecoder, ResponseEvent, decode_response
from ._chunked import (
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ChunkedResponseSealer,
)
from ._errors import OHTTPError
from ._keys import DEFAULT_SUITES, GatewayKey, KeyConfig, decode_key_configs, encode_key_configs
from ._ohttp import (
    ClientRequestContext,
    KeyLookup,
    SenderSetup,
    ServerRequestContext,
    decapsulate_request,
    encapsulate_request,
    prepare_sender,
)


class MediaType(StrEnum):
    """Media types of RFC 9458 §3.2, §4.1 and the chunked OHTTP draft."""

    KEYS = "application/ohttp-keys"
    REQUEST = "message/ohttp-req"
    RESPONSE = "message/ohttp-res"
    CHUNKED_REQUEST = "message/ohttp-chunked-req"
    CHUNKED_RESPONSE = "message/ohttp-chunked-res"


__all__ = [
    "BAD_FIELD_NAME",
    "BAD_FIELD_VALUE",
    "DEFAULT_SUITES",
    "HOP_BY_HOP_FIELDS",
    "BHTTPRequest",
    "BHTTPResponse",
    "ChunkedRequestOpener",
    "ChunkedRequestSealer",
    "ChunkedResponseOpener",
    "ChunkedResponseSealer",
    "ClientRequestContext",
    "GatewayKey",
    "InformationalResponse",
    "KeyConfig",
    "KeyLookup",
    "MediaType",
    "OHTTPError",
    "ResponseDecoder",
    "ResponseEvent",
    "ResponseStreamEncoder",
    "SenderSetup",
    "ServerRequestContext",
    "decapsulate_request",
    "decode_key_configs",
    "decode_request",
    "decode_response",
    "encapsulate_request",
    "encode_key_configs",
    "encode_request",
    "encode_response",
    "end_to_end",
    "prepare_sender",
]
