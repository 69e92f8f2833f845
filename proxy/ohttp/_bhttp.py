"""Binary HTTP messages (RFC 9292): data model, encoders and the request decoder."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass

from ._errors import bhttp_malformed
from ._varint import Incomplete, decode_varint, encode_varint

# RFC 9110 §7.6.1: connection-specific fields describe one hop and never travel inside a
# Binary HTTP message to the next one.
HOP_BY_HOP_FIELDS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def end_to_end(fields: Iterable[tuple[bytes, bytes]],
               hop_by_hop: AbstractSet[bytes] = HOP_BY_HOP_FIELDS) -> list[tuple[bytes, bytes]]:
    """``fields`` without the connection-specific ones (RFC 9110 §7.6.1): those in
    ``hop_by_hop`` and every field the ``Connection`` field names. Names compare lowercased."""
    fields = list(fields)
    drop = set(hop_by_hop)
    for name, value in fields:
        if name.lower() == b"connection":
            drop.update(token.strip().lower() for token in value.split(b","))
    return [(name, value) for name, value in fields if name.lower() not in drop]

__all__ = [
    "BAD_FIELD_NAME",
    "BAD_FIELD_VALUE",
    "HOP_BY_HOP_FIELDS",
    "BHTTPRequest",
    "BHTTPResponse",
    "Fields",
    "InformationalResponse",
    "Reader",
    "ResponseStreamEncoder",
    "check_padding",
    "decode_request",
    "encode_request",
    "encode_response",
    "end_to_end",
    "read_section",
]

Fields = tuple[tuple[bytes, bytes], ...]

# RFC 9292 §3.3: framing indicators.
_KNOWN_REQUEST, _KNOWN_RESPONSE, _INDET_REQUEST, _INDET_RESPONSE = 0, 1, 2, 3
# RFC 9292 §3.6: field lines are validated as HTTP/2 fields (RFC 9113 §8.2.1), and a message
# carrying a pseudo-field is invalid (control data has its own place). A name is lowercase
# and has no control character, space, non-ASCII byte or colon; a value has no NUL, CR or LF
# and no leading or trailing space or tab.
BAD_FIELD_NAME = re.compile(rb"[\x00-\x20A-Z:\x7f-\xff]")
BAD_FIELD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
# Field lines in one section. RFC 9292 sets no limit; HTTP servers do (a few hundred headers).
# Each line costs a decode step before any authentication, so a megabyte of one-byte lines would
# hold the event loop for most of a second.
MAX_FIELD_LINES = 1024
# Content chunks of an indeterminate-length request, for the same reason: a megabyte of
# one-byte chunks took a third of a second to join. A request's content is sealed whole by
# the gateway's own client (known length); streamed requests send pieces of 256 bytes or more.
MAX_CONTENT_CHUNKS = 4096


@dataclass(frozen=True, slots=True)
class BHTTPRequest:
    """A request: control data (RFC 9292 §3.4), header fields, content and trailer fields."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """A 1xx response that precedes the final one (RFC 9292 §3.5.1)."""

    status: int
    headers: Fields = ()


@dataclass(frozen=True, slots=True)
class BHTTPResponse:
    """A final response with any informational responses before it (RFC 9292 §3.5)."""

    status: int
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()
    informational: tuple[InformationalResponse, ...] = ()


class Reader:
    """A cursor over bytes; every read raises :class:`Incomplete` past the end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def varint(self) -> int:
        value, self.pos = decode_varint(self.data, self.pos)
        return value

    def take(self, length: int) -> bytes:
        end = self.pos + length
        if end > len(self.data):
            raise Incomplete
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out

    def at_end(self) -> bool:
        return self.pos >= len(self.data)


def _field_lines(fields: Fields) -> bytes:
    out = bytearray()
    for name, value in fields:
        if not name:
            raise bhttp_malformed("empty field name")
        out += encode_varint(len(name)) + name + encode_varint(len(value)) + value
    return bytes(out)


def _section(fields: Fields, known: bool) -> bytes:
    # RFC 9292 §3.6: known-length sections are length-prefixed; indeterminate ones end with a
    # zero-length field name.
    lines = _field_lines(fields)
    return encode_varint(len(lines)) + lines if known else lines + b"\x00"


def _content(content: bytes, known: bool) -> bytes:
    # RFC 9292 §3.7: indeterminate content is a series of chunks ended by a zero-length chunk.
    if known:
        return encode_varint(len(content)) + content
    return (encode_varint(len(content)) + content if content else b"") + b"\x00"


def encode_request(req: BHTTPRequest, *, indeterminate: bool = False, padding: int = 0) -> bytes:
    """Encode a request (RFC 9292 §3.1/§3.2); ``padding`` appends zero bytes (§3.8)."""
    known = not indeterminate
    parts = [encode_varint(_KNOWN_REQUEST if known else _INDET_REQUEST)]
    for item in (req.method, req.scheme, req.authority, req.path):
        parts += (encode_varint(len(item)), item)
    parts += (_section(req.headers, known), _content(req.content, known))
    parts += (_section(req.trailers, known), b"\x00" * padding)
    return b"".join(parts)


def encode_response(resp: BHTTPResponse, *, indeterminate: bool = False, padding: int = 0) -> bytes:
    """Encode a response with its informational responses (RFC 9292 §3.5)."""
    known = not indeterminate
    _check_final_status(resp.status)
    parts = [encode_varint(_KNOWN_RESPONSE if known else _INDET_RESPONSE)]
    for info in resp.informational:
        _check_informational_status(info.status)
        parts += (encode_varint(info.status), _section(info.headers, known))
    parts += (encode_varint(resp.status), _section(resp.headers, known))
    parts += (_content(resp.content, known), _section(resp.trailers, known))
    parts.append(b"\x00" * padding)
    return b"".join(parts)


def _check_final_status(status: int) -> None:
    if not 200 <= status <= 599:
        raise bhttp_malformed("final status code out of range")


def _check_informational_status(status: int) -> None:
    if not 100 <= status <= 199:
        raise bhttp_malformed("informational status code out of range")


class ResponseStreamEncoder:
    """Encode an indeterminate-length response piece by piece (RFC 9292 §3.2), for streaming.

    Call :meth:`informational` any number of times, then :meth:`head` once, :meth:`body` for each
    piece of content, and :meth:`end` once. Empty body pieces encode to nothing, since a
    zero-length chunk would end the content (§3.7).
    """

    __slots__ = ("_started",)

    def __init__(self) -> None:
        self._started = False

    def _prefix(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return encode_varint(_INDET_RESPONSE)

    def informational(self, status: int, headers: Fields = ()) -> bytes:
        _check_informational_status(status)
        return self._prefix() + encode_varint(status) + _section(headers, False)

    def head(self, status: int, headers: Fields = ()) -> bytes:
        _check_final_status(status)
        return self._prefix() + encode_varint(status) + _section(headers, False)

    @staticmethod
    def body(data: bytes) -> bytes:
        return encode_varint(len(data)) + data if data else b""

    @staticmethod
    def end(trailers: Fields = ()) -> bytes:
        return b"\x00" + _section(trailers, False)


def read_section(reader: Reader, known: bool) -> Fields:
    """Read one field section (RFC 9292 §3.6); :class:`Incomplete` if it is not all there."""
    if not known:
        return _read_lines(reader, until_zero=True)
    length = reader.varint()
    sub = Reader(reader.take(length))
    try:
        return _read_lines(sub, until_zero=False)
    except Incomplete:
        raise bhttp_malformed("field line overruns its section") from None


def _read_lines(reader: Reader, *, until_zero: bool) -> Fields:
    fields: list[tuple[bytes, bytes]] = []
    while until_zero or not reader.at_end():
        name_len = reader.varint()
        if name_len == 0:
            if until_zero:
                break
            raise bhttp_malformed("empty field name")
        if len(fields) == MAX_FIELD_LINES:
            raise bhttp_malformed(f"more than {MAX_FIELD_LINES} field lines in a section")
        name = reader.take(name_len)
        value = reader.take(reader.varint())
        if BAD_FIELD_NAME.search(name):
            raise bhttp_malformed("invalid field name")
        if BAD_FIELD_VALUE.search(value):
            raise bhttp_malformed("invalid field value")
        fields.append((name, value))
    return tuple(fields)


@contextmanager
def _truncation_is_malformed() -> Iterator[None]:
    try:
        yield
    except Incomplete:
        raise bhttp_malformed("message truncated") from None


def _read_content(reader: Reader, known: bool) -> bytes:
    if known:
        return reader.take(reader.varint())
    chunks: list[bytes] = []
    while length := reader.varint():
        if len(chunks) == MAX_CONTENT_CHUNKS:
            raise bhttp_malformed(f"more than {MAX_CONTENT_CHUNKS} content chunks")
        chunks.append(reader.take(length))
    return b"".join(chunks)


def check_padding(reader: Reader) -> None:
    """RFC 9292 §3.8: anything after the message must be zero bytes."""
    if any(reader.data[reader.pos :]):
        raise bhttp_malformed("non-zero bytes after the message")


def decode_request(data: bytes) -> BHTTPRequest:
    """Decode a known- or indeterminate-length request, allowing truncation (RFC 9292 §3.8)."""
    reader = Reader(data)
    with _truncation_is_malformed():
        framing = reader.varint()
        if framing not in (_KNOWN_REQUEST, _INDET_REQUEST):
            raise bhttp_malformed("not a request framing indicator")
        known = framing == _KNOWN_REQUEST
        method, scheme, authority, path = (reader.take(reader.varint()) for _ in range(4))
        # RFC 9458 Appendix A's request ends here: every section after it is empty.
        headers = () if reader.at_end() else read_section(reader, known)
        content = b"" if reader.at_end() else _read_content(reader, known)
        trailers = () if reader.at_end() else read_section(reader, known)
    check_padding(reader)
    return BHTTPRequest(method, scheme, authority, path, headers, content, trailers)
