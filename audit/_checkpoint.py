"""C2SP tlog-checkpoint: origin, decimal size, base64 root hash, optional extension lines."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._errors import VerificationError
from ._merkle import HASH_SIZE
from ._note import NoteVerifier, sign_note, verify_note

__all__ = ["SignedCheckpoint"]

_SIZE = re.compile(r"^(0|[1-9][0-9]{0,19})$")


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and the signed note that carries it."""

    origin: str
    size: int
    root_hash: bytes
    note: str
    extensions: tuple[str, ...] = ()

    @staticmethod
    def body(origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...] = ()) -> str:
        """c2sp.org/tlog-checkpoint §Note text."""
        lines = [origin, str(size), base64.b64encode(root_hash).decode(), *extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def sign(
        cls,
        origin: str,
        size: int,
        root_hash: bytes,
        key: Ed25519PrivateKey,
        extensions: tuple[str, ...] = (),
    ) -> SignedCheckpoint:
        note = sign_note(cls.body(origin, size, root_hash, extensions), origin, key)
        return cls(origin, size, root_hash, note, extensions)

    @classmethod
    def parse(cls, note: str, vkey: str, origin: str | None = None) -> SignedCheckpoint:
        """Verify the note with ``vkey`` and parse its checkpoint body.

        The origin must equal the verifier's name unless an explicit ``origin`` is expected.
        """
        verifier = NoteVerifier.parse(vkey)
        text = verify_note(note, [verifier])
        want = verifier.name if origin is None else origin
        return cls._parse_body(text, note, want)

    @classmethod
    def stored(cls, size: int, root_hash: bytes, note: str, vkey: str,
               origin: str | None = None) -> SignedCheckpoint:
        """A stored checkpoint (its row's size, root and note): the note verified with
        ``vkey``, and restating the row's size and root, which nobody signed."""
        checkpoint = cls.parse(note, vkey, origin)
        if (checkpoint.size, checkpoint.root_hash) != (size, bytes(root_hash)):
            raise VerificationError(f"checkpoint {size}: columns differ from its signed note")
        return checkpoint

    @classmethod
    def _parse_body(cls, text: str, note: str, origin: str) -> SignedCheckpoint:
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise VerificationError("malformed checkpoint body")
        if lines[0] != origin:
            raise VerificationError("checkpoint origin does not match")
        if not _SIZE.fullmatch(lines[1]):
            raise VerificationError("malformed checkpoint size")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise VerificationError("malformed checkpoint root hash") from exc
        if len(root) != HASH_SIZE:
            raise VerificationError("malformed checkpoint root hash")
        return cls(lines[0], int(lines[1]), root, note, tuple(lines[3:]))
