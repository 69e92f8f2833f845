"""C2SP signed-note (Ed25519) and tlog-checkpoint bodies.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <name> base64(keyid(4) || signature)``. The key id is the first 4 bytes of
SHA-256(name || 0x0A || 0x01 || pubkey); a verifier key is
``name+hex(keyid)+base64(0x01 || pubkey)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ._errors import VerificationError

__all__ = ["NoteVerifier", "key_id", "sign_note", "verify_note", "vkey_for"]

ED25519_ALG = 0x01
_SIG_PREFIX = "\u2014 "
# c2sp.org/signed-note: names are non-empty, with no Unicode spaces and no plus signs; control
# characters are refused too (they would break the note's lines). Used with fullmatch: a "$"
# anchor would also accept a trailing newline.
_NAME = re.compile(r"[^\s+\x00-\x1f\x7f]+")
_MAX_SIGNATURES = 100


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_name(name: str) -> str:
    """``name`` if it can name a note's signer (a log origin); ValueError otherwise."""
    if not _NAME.fullmatch(name) or len(name.encode()) > 255:
        raise ValueError("key name must be non-empty with no spaces or '+'")
    return name


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """c2sp.org/signed-note §Ed25519: SHA-256(name || 0x0A || 0x01 || pubkey)[:4]."""
    data = name.encode() + b"\n" + bytes([ED25519_ALG]) + _public_bytes(public_key)
    return hashlib.sha256(data).digest()[:4]


def vkey_for(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key string ``name+hex(keyid)+base64(0x01 || pubkey)``."""
    check_name(name)
    raw = base64.b64encode(bytes([ED25519_ALG]) + _public_bytes(public_key)).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{raw}"


@dataclass(frozen=True)
class NoteVerifier:
    """One Ed25519 note verifier key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        try:
            name, hexid, b64 = vkey.split("+", 2)
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hexid)
        except (ValueError, binascii.Error) as exc:
            raise VerificationError("malformed verifier key") from exc
        if len(hexid) != 8 or len(raw) != 33 or raw[0] != ED25519_ALG:
            raise VerificationError("unsupported verifier key")
        try:
            check_name(name)
        except ValueError as exc:
            raise VerificationError("malformed verifier key name") from exc
        public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        if key_id(name, public_key) != kid:
            raise VerificationError("verifier key id does not match its key")
        return cls(name, kid, public_key)


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign note text (must end in a newline) with one Ed25519 key."""
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    kid = key_id(check_name(name), private_key.public_key())
    sig = base64.b64encode(kid + private_key.sign(text.encode())).decode()
    return f"{text}\n{_SIG_PREFIX}{name} {sig}\n"


def _split_note(note: str) -> tuple[str, list[str]]:
    if not note.endswith("\n") or "\n\n" not in note:
        raise VerificationError("malformed note")
    text, _, sigs = note.rpartition("\n\n")
    text += "\n"
    lines = sigs[:-1].split("\n")
    # A lone surrogate (e.g. from a JSON "\ud800" escape) is not text: it has no UTF-8 bytes.
    # The whole note, signature lines too, must be UTF-8 with no control character but newline.
    if (any((ord(c) < 0x20 and c != "\n") or 0xD800 <= ord(c) <= 0xDFFF for c in note)
            or len(lines) > _MAX_SIGNATURES):
        raise VerificationError("malformed note")
    return text, lines


def _parse_sig_line(line: str) -> tuple[str, bytes, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise VerificationError("malformed note signature line")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise VerificationError("malformed note signature") from exc
    if not _NAME.fullmatch(name) or len(raw) < 5:
        raise VerificationError("malformed note signature")
    return name, raw[:4], raw[4:]


def verify_note(note: str, verifiers: list[NoteVerifier]) -> str:
    """Verify a signed note; returns its text.

    c2sp.org/signed-note: signatures from unknown keys are ignored, but every signature from a
    known key must verify and at least one must be present.
    """
    text, lines = _split_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = 0
    for line in lines:
        name, kid, sig = _parse_sig_line(line)
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        try:
            verifier.public_key.verify(sig, text.encode())
        except InvalidSignature as exc:
            raise VerificationError(f"invalid signature for key {name}") from exc
        verified += 1
    if not verified:
        raise VerificationError("no signature from a known key")
    return text
