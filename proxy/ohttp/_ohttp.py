"""Oblivious HTTP request and response encapsulation (RFC 9458 §4), both sides."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pyhpke import ContextInterface

from ._errors import OHTTPError, malformed
from ._hpke import (
    NT,
    AEADCipher,
    Suite,
    aead_sizes,
    crypto_errors,
    derive_response_aead,
    public_key_length,
    recipient_context,
    sender_context,
)
from ._keys import GatewayKey, KeyConfig

__all__ = [
    "ClientRequestContext",
    "KeyLookup",
    "SenderSetup",
    "ServerRequestContext",
    "decapsulate_request",
    "encapsulate_request",
    "open_header",
    "prepare_sender",
    "seal_header",
    "sender_setup",
]

KeyLookup = Callable[[int], GatewayKey | None]

REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"
CHUNKED_REQUEST_LABEL = b"message/bhttp chunked request"
CHUNKED_RESPONSE_LABEL = b"message/bhttp chunked response"
COMMITMENT_LABEL = b"sealgate commitment key"
HEADER = struct.Struct(">BHHH")


class _Exchange:
    """State of one exchange shared by both sides: suite, enc, HPKE context, commitment key."""

    def __init__(self, suite: Suite, enc: bytes, context: ContextInterface, chunked: bool) -> None:
        self.suite = suite
        self.enc = enc
        self.chunked = chunked
        self._context: ContextInterface | None = context
        # A key for audit commitments, exported from this HPKE context under its own label
        # (RFC 9180 §5.3): only the two ends of this exchange can compute it.
        with crypto_errors():
            self.commitment_key = context.export(COMMITMENT_LABEL, 32)

    @property
    def response_nonce_length(self) -> int:
        nk, nn = aead_sizes(self.suite.aead_id)
        return max(nk, nn)

    def hpke_context(self) -> ContextInterface:
        if self._context is None:
            raise RuntimeError("the response keys of this exchange were already derived")
        return self._context

    def response_aead(self, response_nonce: bytes) -> tuple[AEADCipher, bytes]:
        """RFC 9458 §4.4 key derivation; done once, after which the HPKE context is dropped."""
        label = CHUNKED_RESPONSE_LABEL if self.chunked else RESPONSE_LABEL
        context, self._context = self.hpke_context(), None
        return derive_response_aead(context, label, self.suite.aead_id, self.enc, response_nonce)

    def new_response_nonce(self, pinned: bytes | None) -> bytes:
        if pinned is None:
            return os.urandom(self.response_nonce_length)
        if len(pinned) != self.response_nonce_length:
            raise ValueError("response nonce has the wrong length")
        return pinned


def seal_header(
    config: KeyConfig, suite: Suite, *, chunked: bool, ephemeral_sk: bytes | None
) -> tuple[bytes, bytes, ContextInterface]:
    """RFC 9458 §4.3 (and the chunked draft): return header, enc and the sender context."""
    header = HEADER.pack(config.key_id, suite.kem_id, suite.kdf_id, suite.aead_id)
    label = CHUNKED_REQUEST_LABEL if chunked else REQUEST_LABEL
    enc, context = sender_context(suite, config.public_key, label + b"\x00" + header, ephemeral_sk)
    return header, enc, context


@dataclass(frozen=True)
class SenderSetup:
    """The sender half of one exchange, set up before its request exists: a fresh ephemeral
    key, the HPKE context for ``config`` and the commitment key exported from it. Use it for
    exactly one request, then drop it."""

    config: KeyConfig
    chunked: bool
    header: bytes
    exchange: ClientRequestContext = field(repr=False)


def prepare_sender(
    config: KeyConfig, *, chunked: bool, ephemeral_sk: bytes | None = None
) -> SenderSetup:
    """Set up the sender side (KEM encapsulation, key schedule, commitment key) for one future
    request. ``ephemeral_sk`` pins the ephemeral key, for known-answer tests only."""
    suite = config.select_suite()
    header, enc, context = seal_header(config, suite, chunked=chunked, ephemeral_sk=ephemeral_sk)
    return SenderSetup(config, chunked, header, ClientRequestContext(suite, enc, context, chunked))


def sender_setup(config: KeyConfig, chunked: bool, prepared: SenderSetup | None,
                 ephemeral_sk: bytes | None) -> SenderSetup:
    """``prepared`` when given (it must match), else a sender setup made now."""
    if prepared is None:
        return prepare_sender(config, chunked=chunked, ephemeral_sk=ephemeral_sk)
    if prepared.config != config or prepared.chunked != chunked or ephemeral_sk is not None:
        raise ValueError("the prepared sender setup is for another key or request framing")
    return prepared


def open_header(
    data: bytes, keys: KeyLookup, *, chunked: bool
) -> tuple[Suite, bytes, ContextInterface, int]:
    """Parse header‖enc, find the key, set up the recipient context; return the body offset."""
    if len(data) < HEADER.size:
        raise malformed("encapsulated request too short")
    key_id, kem_id, kdf_id, aead_id = HEADER.unpack_from(data)
    key = keys(key_id)
    if key is None:
        raise OHTTPError("ohttp_unknown_key", "unknown key identifier")
    suite = Suite(kem_id, kdf_id, aead_id)
    suite.check()
    if kem_id != key.config.kem_id or (kdf_id, aead_id) not in key.config.suites:
        raise OHTTPError("ohttp_unsupported_suite", "suite not offered for this key")
    end = HEADER.size + (public_key_length(kem_id) or 0)
    if len(data) < end:
        raise malformed("encapsulated request too short")
    enc = bytes(data[HEADER.size : end])
    label = CHUNKED_REQUEST_LABEL if chunked else REQUEST_LABEL
    context = recipient_context(suite, key.secret, enc, label + b"\x00" + data[: HEADER.size])
    return suite, enc, context, end


class ClientRequestContext(_Exchange):
    """The client's side of one exchange: opens the response, holds ``commitment_key``."""

    def open_response(self, data: bytes) -> bytes:
        """RFC 9458 §4.4: open ``response_nonce‖ct``."""
        if self.chunked:
            raise RuntimeError("chunked exchange: use its ChunkedResponseOpener")
        nonce_len = self.response_nonce_length
        if len(data) < nonce_len + NT:
            raise malformed("encapsulated response too short")
        with crypto_errors():
            cipher, nonce = self.response_aead(data[:nonce_len])
            return cipher.decrypt(nonce, data[nonce_len:], b"")


class ServerRequestContext(_Exchange):
    """The gateway's side of one exchange: seals the response, holds ``commitment_key``."""

    def __init__(
        self, suite: Suite, enc: bytes, context: ContextInterface, chunked: bool, key_id: int
    ) -> None:
        super().__init__(suite, enc, context, chunked)
        self.key_id = key_id

    def seal_response(
        self, response: bytes, *, response_nonce_for_testing: bytes | None = None
    ) -> bytes:
        """RFC 9458 §4.4: ``response_nonce‖Seal(key, nonce, "", response)``.

        ``response_nonce_for_testing`` pins the nonce, for known-answer tests only.
        """
        if self.chunked:
            raise RuntimeError("chunked exchange: use its ChunkedResponseSealer")
        response_nonce = self.new_response_nonce(response_nonce_for_testing)
        cipher, nonce = self.response_aead(response_nonce)
        return response_nonce + cipher.encrypt(nonce, response, b"")


def encapsulate_request(
    config: KeyConfig,
    request: bytes,
    *,
    prepared: SenderSetup | None = None,
    ephemeral_sk_for_testing: bytes | None = None,
) -> tuple[bytes, ClientRequestContext]:
    """RFC 9458 §4.3: seal a BHTTP request to ``config``; return it and the client context.

    ``prepared`` (from :func:`prepare_sender`) supplies a sender setup made in advance.
    ``ephemeral_sk_for_testing`` pins the ephemeral key, for known-answer tests only.
    """
    setup = sender_setup(config, False, prepared, ephemeral_sk_for_testing)
    exchange = setup.exchange
    with crypto_errors():
        ct = exchange.hpke_context().seal(request, b"")
    return setup.header + exchange.enc + ct, exchange


def decapsulate_request(data: bytes, keys: KeyLookup) -> tuple[bytes, ServerRequestContext]:
    """RFC 9458 §4.3: open an encapsulated request; return the BHTTP bytes and the context."""
    suite, enc, context, offset = open_header(data, keys, chunked=False)
    if len(data) < offset + NT:
        raise malformed("encapsulated request too short")
    with crypto_errors():
        request = context.open(data[offset:], b"")
    return request, ServerRequestContext(suite, enc, context, False, data[0])
