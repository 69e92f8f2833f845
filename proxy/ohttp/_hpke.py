"""The HPKE seam (RFC 9180): suite identifiers, contexts through pyhpke, and the response AEAD.

pyhpke and cryptography exceptions never leave this module untranslated.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pyhpke import (
    AEADId,
    CipherSuite,
    ContextInterface,
    KDFId,
    KEMId,
    KEMKey,
    KEMKeyInterface,
    KEMKeyPair,
    PyHPKEError,
)

from ._errors import OHTTPError, decrypt_failed

_CPYTHON = sys.implementation.name == "cpython"

__all__ = [
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AEAD_CHACHA20_POLY1305",
    "KDF_HKDF_SHA256",
    "KEM_X25519",
    "NT",
    "Suite",
    "aead_sizes",
    "crypto_errors",
    "derive_response_aead",
    "generate_private_key",
    "private_key",
    "public_key",
    "public_key_length",
    "recipient_context",
    "sender_context",
    "wipe",
]

KEM_X25519 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003
NT = 16  # tag length of every supported AEAD (RFC 9180 §7.3)

_NPK = {KEM_X25519: 32}
# RFC 9180 §7.3: (Nk, Nn) per AEAD.
_AEAD_SIZES = {
    AEAD_AES_128_GCM: (16, 12),
    AEAD_AES_256_GCM: (32, 12),
    AEAD_CHACHA20_POLY1305: (32, 12),
}

AEADCipher = AESGCM | ChaCha20Poly1305


@dataclass(frozen=True, slots=True)
class Suite:
    """An HPKE suite as OHTTP names it: KEM, KDF and AEAD identifiers."""

    kem_id: int
    kdf_id: int
    aead_id: int

    def check(self) -> None:
        if (
            self.kem_id not in _NPK
            or self.kdf_id != KDF_HKDF_SHA256
            or self.aead_id not in _AEAD_SIZES
        ):
            raise OHTTPError("ohttp_unsupported_suite", "HPKE suite not supported")


def public_key_length(kem_id: int) -> int | None:
    return _NPK.get(kem_id)


def aead_sizes(aead_id: int) -> tuple[int, int]:
    """``(Nk, Nn)`` of a supported AEAD."""
    return _AEAD_SIZES[aead_id]


@contextmanager
def crypto_errors() -> Iterator[None]:
    """Map every failure inside HPKE or the AEAD to the one non-oracular decryption error."""
    try:
        yield
    except (PyHPKEError, InvalidTag, ValueError) as exc:
        raise decrypt_failed() from exc


@lru_cache(maxsize=16)
def _cipher_suite(kem_id: int, kdf_id: int, aead_id: int) -> CipherSuite:
    return CipherSuite.new(KEMId(kem_id), KDFId(kdf_id), AEADId(aead_id))


def generate_private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


def private_key(sk: bytes) -> KEMKeyInterface:
    with crypto_errors():
        return KEMKey.from_pyca_cryptography_key(X25519PrivateKey.from_private_bytes(sk))


def public_key(sk: bytes) -> bytes:
    with crypto_errors():
        return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


def sender_context(
    suite: Suite, pk_r: bytes, info: bytes, ephemeral_sk: bytes | None = None
) -> tuple[bytes, ContextInterface]:
    """SetupBaseS (RFC 9180 §5.1.1); ``ephemeral_sk`` pins skE for known-answer tests only."""
    cs = _cipher_suite(suite.kem_id, suite.kdf_id, suite.aead_id)
    with crypto_errors():
        pkr = cs.kem.deserialize_public_key(pk_r)
        eks = None
        if ephemeral_sk is not None:
            eks = KEMKeyPair(
                private_key(ephemeral_sk), cs.kem.deserialize_public_key(public_key(ephemeral_sk))
            )
        return cs.create_sender_context(pkr, info=info, eks=eks)


def recipient_context(
    suite: Suite, sk_r: KEMKeyInterface, enc: bytes, info: bytes
) -> ContextInterface:
    """SetupBaseR (RFC 9180 §5.1.1)."""
    cs = _cipher_suite(suite.kem_id, suite.kdf_id, suite.aead_id)
    with crypto_errors():
        return cs.create_recipient_context(enc, sk_r, info=info)


_BYTES_DATA = bytes.__basicsize__ - 1  # offset of a CPython bytes object's data


def wipe(secret: bytes | bytearray) -> None:
    """Overwrite key material with zeros once it is used. A ``bytes`` object is immutable to
    Python but its buffer is not: on CPython it is zeroed in place (only for objects this
    module created and owns, of 16 bytes or more, which the interpreter never shares)."""
    if isinstance(secret, bytearray):
        secret[:] = bytes(len(secret))
    elif _CPYTHON and len(secret) >= 16:
        ctypes.memset(id(secret) + _BYTES_DATA, 0, len(secret))


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytearray:
    # RFC 5869 §2.3
    out, block, counter = bytearray(), b"", 1
    while len(out) < length:
        previous = block
        block = hmac.digest(prk, block + info + bytes((counter,)), hashlib.sha256)
        wipe(previous)
        out += block
        counter += 1
    wipe(block)
    del out[length:]
    return out


def derive_response_aead(
    context: ContextInterface, label: bytes, aead_id: int, enc: bytes, response_nonce: bytes
) -> tuple[AEADCipher, bytes]:
    """RFC 9458 §4.4: derive the response AEAD key and nonce from the request's HPKE context.
    The exported secret, the HKDF intermediates and every copy of the key are wiped before
    this returns; the cipher keeps the key only in its own (OpenSSL) state. Where this build
    of ``cryptography`` keeps the key object itself instead (``_WIPE_SAFE``), that one object
    is left to the cipher."""
    nk, nn = _AEAD_SIZES[aead_id]
    secret = context.export(label, max(nn, nk))
    prk = hmac.digest(enc + response_nonce, secret, hashlib.sha256)  # HKDF-Extract(salt, IKM)
    wipe(secret)
    key = _hkdf_expand(prk, b"key", nk)
    nonce = bytes(_hkdf_expand(prk, b"nonce", nn))
    wipe(prk)
    key_bytes = bytes(key)
    wipe(key)
    cipher: AEADCipher = (
        ChaCha20Poly1305(key_bytes) if aead_id == AEAD_CHACHA20_POLY1305 else AESGCM(key_bytes)
    )
    if _WIPE_SAFE.get(aead_id, False):
        wipe(key_bytes)
    return cipher, nonce


def _copies_key(make: type[AEADCipher], size: int) -> bool:
    """Whether a ``make`` cipher keeps its own copy of its key, so that wiping the key object
    afterwards is safe. Builds of ``cryptography`` on OpenSSL before 3.2 keep the object and
    read it at every operation: wiping it would leave the cipher an all-zero key."""
    key = bytes(bytearray(os.urandom(size)))  # objects of its own, never shared
    original = bytes(bytearray(key))
    cipher = make(key)
    wipe(key)
    nonce = bytes(12)
    return cipher.encrypt(nonce, b"probe", None) == make(original).encrypt(nonce, b"probe", None)


def _wipe_safety() -> dict[int, bool]:
    """Per AEAD: may the key object given to its cipher be wiped (``_copies_key``)?"""
    return {aead: _copies_key(ChaCha20Poly1305 if aead == AEAD_CHACHA20_POLY1305 else AESGCM, nk)
            for aead, (nk, _) in _AEAD_SIZES.items()}


_WIPE_SAFE = _wipe_safety()
