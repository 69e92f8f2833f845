"""QUIC variable-length integers (RFC 9000 §16)."""

from __future__ import annotations

__all__ = ["MAX_VARINT", "Incomplete", "decode_varint", "encode_varint"]

MAX_VARINT = (1 << 62) - 1


class Incomplete(Exception):
    """More input is needed to finish the current item."""


def encode_varint(value: int) -> bytes:
    """Encode ``value`` in the shortest form (RFC 9000 §16)."""
    if value < 0x40:
        if value < 0:
            raise ValueError("varint must be non-negative")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError("varint too large")


def decode_varint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return ``(value, next_pos)``.

    Raises :class:`Incomplete` when ``data`` ends inside the integer. Non-shortest encodings are
    accepted, as RFC 9000 §16 allows.
    """
    if pos >= len(data):
        raise Incomplete
    first = data[pos]
    length = 1 << (first >> 6)
    end = pos + length
    if end > len(data):
        raise Incomplete
    value = first & 0x3F
    for i in range(pos + 1, end):
        value = (value << 8) | data[i]
    return value, end
