"""Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp), both directions, both sides.

Each chunk is ``Length (i)`` then the sealed chunk; the last one is announced by a zero length,
runs to the end of the message and is sealed with the AAD ``"final"``, so truncation is
detected. Request chunks use the HPKE context's own nonce sequence; response chunks use the
response AEAD nonce XOR a chunk counter.
"""

from __future__ import annotations

from pyhpke import ContextInterface

from ._errors import decrypt_failed, malformed
from ._hpke import NT, AEADCipher, crypto_errors, public_key_length
from ._keys import KeyConfig
from ._ohttp import (
    HEADER,
    ClientRequestContext,
    KeyLookup,
    SenderSetup,
    ServerRequestContext,
    open_header,
    sender_setup,
)
from ._varint import Incomplete, decode_varint, encode_varint

__all__ = [
    "DEFAULT_MAX_CHUNK",
    "MAX_REQUEST_CHUNKS",
    "ChunkedRequestOpener",
    "ChunkedRequestSealer",
    "ChunkedResponseOpener",
    "ChunkedResponseSealer",
]

DEFAULT_MAX_CHUNK = 1 << 24
# The draft sets no limit on how many chunks a request has. Each one costs an HPKE open, and a
# request is opened before anything in it is authenticated: a megabyte of 17-byte chunks held
# the event loop for about a quarter of a second. 4,096 chunks allow 256-byte chunks through a
# whole 1 MiB body; the gateway's own client seals a request body as one chunk.
MAX_REQUEST_CHUNKS = 4096
_FINAL_AAD = b"final"


def _frame(ct: bytes, final: bool) -> bytes:
    return b"\x00" + ct if final else encode_varint(len(ct)) + ct


def _aad(final: bool) -> bytes:
    return _FINAL_AAD if final else b""


class _Framer:
    """Splits a chunk stream into sealed chunks as their bytes arrive."""

    def __init__(self, max_chunk: int, max_chunks: int | None = None) -> None:
        self._buf = bytearray()
        self._max = max_chunk + NT
        self._left = max_chunks  # non-final chunks still allowed; None: no limit
        self.final = False

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        pos = 0
        while not self.final:
            try:
                length, end = decode_varint(self._buf, pos)
            except Incomplete:
                break
            if length == 0:
                self.final, pos = True, end
            elif length > self._max:
                raise malformed("chunk too large")
            elif end + length <= len(self._buf):
                if self._left is not None:
                    if self._left == 0:
                        raise malformed(f"more than {MAX_REQUEST_CHUNKS} chunks in a request")
                    self._left -= 1
                out.append(bytes(self._buf[end : end + length]))
                pos = end + length
            else:
                break
        del self._buf[:pos]
        # A pending chunk's length was checked when its prefix was read; the final chunk runs
        # to the end of the stream, so its size is known only from what has arrived.
        if self.final and len(self._buf) > self._max:
            raise malformed("chunk too large")
        return out

    def close(self) -> bytes:
        if not self.final:
            raise malformed("chunked message truncated")
        data = bytes(self._buf)
        self._buf.clear()
        return data


class _ResponseAEAD:
    """Response chunk protection: nonce = aead_nonce XOR counter (chunked draft)."""

    def __init__(self, cipher: AEADCipher, nonce: bytes) -> None:
        self._cipher: AEADCipher | None = cipher
        self._nonce = int.from_bytes(nonce, "big")
        self._nn = len(nonce)
        self._counter = 0

    def _next(self, final: bool) -> tuple[AEADCipher, bytes]:
        if self._cipher is None:
            raise RuntimeError("the final chunk was already processed")
        cipher = self._cipher
        if final:
            self._cipher = None  # drop the key as soon as the last chunk is done
        nonce = (self._nonce ^ self._counter).to_bytes(self._nn, "big")
        self._counter += 1
        return cipher, nonce

    def seal(self, chunk: bytes, final: bool) -> bytes:
        cipher, nonce = self._next(final)
        return cipher.encrypt(nonce, chunk, _aad(final))

    def open(self, ct: bytes, final: bool) -> bytes:
        cipher, nonce = self._next(final)
        with crypto_errors():
            return cipher.decrypt(nonce, ct, _aad(final))


def _check_not_empty(chunk: bytes, final: bool) -> None:
    """The draft (§6): a non-final chunk MUST NOT carry an empty plaintext."""
    if not chunk and not final:
        raise ValueError("a non-final chunk must not be empty")


def _not_empty(plaintext: bytes) -> bytes:
    """A non-final chunk's plaintext; an empty one counts as a decryption error (§6)."""
    if not plaintext:
        raise decrypt_failed()
    return plaintext


class ChunkedRequestSealer:
    """Client: seal a request chunk by chunk; the first output carries header‖enc."""

    def __init__(self, config: KeyConfig, *, prepared: SenderSetup | None = None,
                 ephemeral_sk_for_testing: bytes | None = None) -> None:
        setup = sender_setup(config, True, prepared, ephemeral_sk_for_testing)
        self.context = setup.exchange
        self._prefix = setup.header + self.context.enc
        self._hpke: ContextInterface | None = self.context.hpke_context()

    def seal(self, chunk: bytes, *, final: bool = False) -> bytes:
        if self._hpke is None:
            raise RuntimeError("the final chunk was already sealed")
        _check_not_empty(chunk, final)
        with crypto_errors():
            ct = self._hpke.seal(chunk, _aad(final))
        out, self._prefix = self._prefix + _frame(ct, final), b""
        if final:
            self._hpke = None
        return out


class ChunkedRequestOpener:
    """Gateway: open a chunked request as its bytes arrive; ``context`` once the header is in."""

    def __init__(self, keys: KeyLookup, *, max_chunk_size: int = DEFAULT_MAX_CHUNK) -> None:
        self._keys = keys
        self._head = bytearray()
        self._framer = _Framer(max_chunk_size, MAX_REQUEST_CHUNKS - 1)  # the final one is more
        self._hpke: ContextInterface | None = None
        self.context: ServerRequestContext | None = None

    def _open_header(self, data: bytes) -> bytes:
        self._head += data
        if len(self._head) < HEADER.size:
            return b""
        npk = public_key_length(int.from_bytes(self._head[1:3], "big"))
        if npk is not None and len(self._head) < HEADER.size + npk:
            return b""
        suite, enc, hpke, offset = open_header(bytes(self._head), self._keys, chunked=True)
        self._hpke = hpke
        self.context = ServerRequestContext(suite, enc, hpke, True, self._head[0])
        rest = bytes(self._head[offset:])
        self._head.clear()
        return rest

    def _open(self, ct: bytes, final: bool) -> bytes:
        if self._hpke is None:
            raise RuntimeError("no request context")
        with crypto_errors():
            return self._hpke.open(ct, _aad(final))

    def feed(self, data: bytes) -> list[bytes]:
        """Return the plaintext of every non-final chunk completed by ``data``."""
        if self.context is None:
            data = self._open_header(data)
            if self.context is None:
                return []
        return [_not_empty(self._open(ct, False)) for ct in self._framer.feed(data)]

    def close(self) -> bytes:
        """End of the request body: open and return the final chunk."""
        if self.context is None:
            raise malformed("encapsulated request too short")
        plaintext = self._open(self._framer.close(), True)
        self._hpke = None
        return plaintext


class ChunkedResponseSealer:
    """Gateway: send ``response_nonce`` first, then :meth:`seal` each chunk as it is produced."""

    def __init__(
        self, context: ServerRequestContext, *, response_nonce_for_testing: bytes | None = None
    ) -> None:
        if not context.chunked:
            raise RuntimeError("not a chunked exchange")
        self.response_nonce = context.new_response_nonce(response_nonce_for_testing)
        self._aead = _ResponseAEAD(*context.response_aead(self.response_nonce))

    def seal(self, chunk: bytes, *, final: bool = False) -> bytes:
        _check_not_empty(chunk, final)
        return _frame(self._aead.seal(chunk, final), final)


class ChunkedResponseOpener:
    """Client: open a chunked response as its bytes arrive."""

    def __init__(
        self, context: ClientRequestContext, *, max_chunk_size: int = DEFAULT_MAX_CHUNK
    ) -> None:
        if not context.chunked:
            raise RuntimeError("not a chunked exchange")
        self._context = context
        self._head = bytearray()
        self._framer = _Framer(max_chunk_size)
        self._aead: _ResponseAEAD | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Return the plaintext of every non-final chunk completed by ``data``."""
        if self._aead is None:
            self._head += data
            nonce_len = self._context.response_nonce_length
            if len(self._head) < nonce_len:
                return []
            with crypto_errors():
                self._aead = _ResponseAEAD(
                    *self._context.response_aead(bytes(self._head[:nonce_len]))
                )
            data = bytes(self._head[nonce_len:])
            self._head.clear()
        aead = self._aead
        return [_not_empty(aead.open(ct, False)) for ct in self._framer.feed(data)]

    def close(self) -> bytes:
        """End of the response body: open and return the final chunk."""
        if self._aead is None:
            raise malformed("encapsulated response too short")
        return self._aead.open(self._framer.close(), True)
