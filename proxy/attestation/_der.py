"""A minimal DER reader (X.690 §8) for the few certificate extensions this package reads."""

from __future__ import annotations

from ._errors import VerificationError

__all__ = ["children", "oid_map", "read_integer", "read_oid", "read_string", "read_tlv"]

INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
IA5_STRING = 0x16
UTF8_STRING = 0x0C
SEQUENCE = 0x30


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """Return ``(tag, value, next_offset)`` for the element at ``offset`` (X.690 §8.1)."""
    if offset + 2 > len(data):
        raise VerificationError("cert_chain_invalid", "truncated DER element")
    tag, first = data[offset], data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise VerificationError("cert_chain_invalid", "bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise VerificationError("cert_chain_invalid", "truncated DER value")
    return tag, data[pos : pos + length], pos + length


def children(value: bytes) -> list[tuple[int, bytes]]:
    """The ``(tag, value)`` elements inside a constructed value."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(value):
        tag, inner, pos = read_tlv(value, pos)
        out.append((tag, inner))
    return out


def read_integer(encoded: bytes) -> int:
    """Decode a DER INTEGER element (whole TLV) as a non-negative int."""
    tag, value, _ = read_tlv(encoded)
    if tag != INTEGER:
        raise VerificationError("cert_chain_invalid", "expected a DER INTEGER")
    return int.from_bytes(value, "big", signed=True)


def read_string(encoded: bytes) -> str:
    """Decode a DER IA5String/UTF8String element (whole TLV)."""
    tag, value, _ = read_tlv(encoded)
    if tag not in (IA5_STRING, UTF8_STRING):
        raise VerificationError("cert_chain_invalid", "expected a DER string")
    return value.decode("ascii", "replace")


def read_oid(value: bytes) -> str:
    """Decode the contents of an OBJECT IDENTIFIER (X.690 §8.19) to dotted form."""
    if not value:
        raise VerificationError("cert_chain_invalid", "empty OID")
    arcs = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for byte in value[1:]:
        acc = acc << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    return ".".join(map(str, arcs))


def oid_map(value: bytes) -> dict[str, tuple[int, bytes]]:
    """A SEQUENCE OF SEQUENCE {OID, value} as ``{dotted_oid: (tag, value)}``."""
    out: dict[str, tuple[int, bytes]] = {}
    for tag, inner in children(value):
        parts = children(inner) if tag == SEQUENCE else []
        if len(parts) != 2 or parts[0][0] != OID:
            raise VerificationError("cert_chain_invalid", "malformed OID/value pair")
        out[read_oid(parts[0][1])] = parts[1]
    return out
