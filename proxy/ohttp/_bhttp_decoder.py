"""Incremental decoding of Binary HTTP responses (RFC 9292 §3.2, §3.5), for streaming."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._bhttp import (
    BHTTPResponse,
    Fields,
    InformationalResponse,
    Reader,
    check_padding,
    read_section,
)
from ._errors import bhttp_malformed
from ._varint import Incomplete

__all__ = ["ResponseDecoder", "ResponseEvent", "decode_response"]

EventKind = Literal["informational", "head", "body", "trailers", "end"]


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """One step of a response: a 1xx, the final head, a piece of content, trailers, or the end."""

    kind: EventKind
    status: int = 0
    headers: Fields = ()
    data: bytes = b""


_FRAMING, _STATUS, _CONTENT, _KNOWN_BODY, _TRAILERS, _PADDING = range(6)


class ResponseDecoder:
    """Feed bytes as they arrive; get :class:`ResponseEvent` values as soon as they are whole.

    Known-length content is passed on as it arrives; indeterminate-length content one chunk at a
    time. :meth:`close` marks the end of input: a message may stop only where RFC 9292 §3.8
    allows it (before the content or trailer section), anything else is ``bhttp_malformed``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _FRAMING
        self._known = True
        self._remaining = 0
        self._section_started = False

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if self._state == _PADDING:
            check_padding(Reader(data))
            return []
        self._buf += data
        events: list[ResponseEvent] = []
        pos = 0
        while self._state != _PADDING:
            reader = Reader(self._buf, pos)
            try:
                self._step(reader, events)
            except Incomplete:
                break
            pos = reader.pos
        del self._buf[:pos]
        if self._state == _PADDING:
            check_padding(Reader(self._buf))
            self._buf.clear()
        return events

    def close(self) -> list[ResponseEvent]:
        """End of input: return the closing events, or raise if the message is cut short."""
        if self._state == _PADDING:
            return []
        # RFC 9292 §3.8: truncation is allowed only where a section would start: before the
        # content or trailers, or right after the final status (RFC 9458 Appendix A's
        # response is framing and status alone).
        events = []
        if self._state == _STATUS and self._buf:
            reader = Reader(self._buf)
            try:
                status = reader.varint()
            except Incomplete:
                raise bhttp_malformed("message truncated") from None
            if reader.at_end() and 200 <= status <= 599:
                events.append(ResponseEvent("head", status))
                self._state, self._section_started = _CONTENT, False
                self._buf.clear()
        boundary = self._state in (_CONTENT, _TRAILERS) and not self._section_started
        if self._buf or not boundary:
            raise bhttp_malformed("message truncated")
        self._state = _PADDING
        return [*events, ResponseEvent("end")]

    def _step(self, reader: Reader, events: list[ResponseEvent]) -> None:
        if self._state == _FRAMING:
            self._read_framing(reader)
        elif self._state == _STATUS:
            self._read_head(reader, events)
        elif self._state == _CONTENT:
            self._read_content(reader, events)
        elif self._state == _KNOWN_BODY:
            self._read_known_body(reader, events)
        else:
            trailers = read_section(reader, self._known)
            if trailers:
                events.append(ResponseEvent("trailers", headers=trailers))
            events.append(ResponseEvent("end"))
            self._state = _PADDING

    def _read_framing(self, reader: Reader) -> None:
        framing = reader.varint()
        if framing not in (1, 3):
            raise bhttp_malformed("not a response framing indicator")
        self._known = framing == 1
        self._state = _STATUS

    def _read_head(self, reader: Reader, events: list[ResponseEvent]) -> None:
        status = reader.varint()
        headers = read_section(reader, self._known)
        if 100 <= status <= 199:
            events.append(ResponseEvent("informational", status, headers))
        elif 200 <= status <= 599:
            events.append(ResponseEvent("head", status, headers))
            self._state = _CONTENT
        else:
            raise bhttp_malformed("status code out of range")

    def _read_content(self, reader: Reader, events: list[ResponseEvent]) -> None:
        length = reader.varint()
        self._section_started = True
        if self._known:
            self._remaining = length
            self._state = _KNOWN_BODY if length else _TRAILERS
        elif length:
            events.append(ResponseEvent("body", data=reader.take(length)))
        else:
            self._state = _TRAILERS
        if self._state == _TRAILERS:
            self._section_started = False

    def _read_known_body(self, reader: Reader, events: list[ResponseEvent]) -> None:
        available = min(self._remaining, len(reader.data) - reader.pos)
        if available == 0:
            raise Incomplete
        events.append(ResponseEvent("body", data=reader.take(available)))
        self._remaining -= available
        if not self._remaining:
            self._state = _TRAILERS
            self._section_started = False


def decode_response(data: bytes) -> BHTTPResponse:
    """Decode a whole known- or indeterminate-length response (RFC 9292 §3.5)."""
    decoder = ResponseDecoder()
    events = decoder.feed(data) + decoder.close()
    info: list[InformationalResponse] = []
    status, body = 0, bytearray()
    headers: Fields = ()
    trailers: Fields = ()
    for event in events:
        if event.kind == "informational":
            info.append(InformationalResponse(event.status, event.headers))
        elif event.kind == "head":
            status, headers = event.status, event.headers
        elif event.kind == "body":
            body += event.data
        elif event.kind == "trailers":
            trailers = event.headers
    return BHTTPResponse(status, headers, bytes(body), trailers, tuple(info))
