"""OHTTP key configurations (RFC 9458 §3) and gateway key pairs."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyhpke import KEMKeyInterface

from ._errors import OHTTPError
from ._hpke import (
    AEAD_AES_128_GCM,
    AEAD_AES_256_GCM,
    AEAD_CHACHA20_POLY1305,
    KDF_HKDF_SHA256,
    KEM_X25519,
    Suite,
    generate_private_key,
    private_key,
    public_key,
    public_key_length,
)

__all__ = ["DEFAULT_SUITES", "GatewayKey", "KeyConfig", "decode_key_configs", "encode_key_configs"]

# (KDF, AEAD) pairs a gateway offers, in preference order.
DEFAULT_SUITES: tuple[tuple[int, int], ...] = (
    (KDF_HKDF_SHA256, AEAD_AES_128_GCM),
    (KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305),
    (KDF_HKDF_SHA256, AEAD_AES_256_GCM),
)


def _bad_config(detail: str) -> OHTTPError:
    return OHTTPError("ohttp_key_config_malformed", detail)


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One key configuration: key id, KEM, public key and the (KDF, AEAD) pairs offered."""

    key_id: int
    kem_id: int
    public_key: bytes
    suites: tuple[tuple[int, int], ...]

    def encode(self) -> bytes:
        """RFC 9458 §3.1 Key Config encoding."""
        algs = b"".join(struct.pack(">HH", kdf, aead) for kdf, aead in self.suites)
        head = struct.pack(">BH", self.key_id, self.kem_id)
        return head + self.public_key + struct.pack(">H", len(algs)) + algs

    @classmethod
    def decode(cls, data: bytes) -> KeyConfig:
        """Parse exactly one Key Config (RFC 9458 §3.1)."""
        config, end = _parse_config(data, 0)
        if end != len(data):
            raise _bad_config("trailing bytes after key config")
        return config

    def select_suite(self) -> Suite:
        """The first offered suite this implementation supports (the gateway's preference)."""
        for kdf, aead in self.suites:
            suite = Suite(self.kem_id, kdf, aead)
            try:
                suite.check()
            except OHTTPError:
                continue
            return suite
        raise OHTTPError("ohttp_unsupported_suite", "no supported HPKE suite in key config")


def _parse_config(data: bytes, pos: int) -> tuple[KeyConfig, int]:
    if len(data) < pos + 3:
        raise _bad_config("truncated key config")
    key_id, kem_id = struct.unpack_from(">BH", data, pos)
    npk = public_key_length(kem_id)
    if npk is None:
        raise OHTTPError("ohttp_unsupported_suite", "KEM not supported")
    pos += 3
    if len(data) < pos + npk + 2:
        raise _bad_config("truncated key config")
    pk = bytes(data[pos : pos + npk])
    (algs_len,) = struct.unpack_from(">H", data, pos + npk)
    pos += npk + 2
    if algs_len < 4 or algs_len % 4 or len(data) < pos + algs_len:
        raise _bad_config("bad symmetric algorithms list")
    suites = tuple(struct.iter_unpack(">HH", data[pos : pos + algs_len]))
    return KeyConfig(key_id, kem_id, pk, suites), pos + algs_len


def encode_key_configs(configs: Iterable[KeyConfig]) -> bytes:
    """``application/ohttp-keys``: each config with a 2-byte length prefix (RFC 9458 §3.2)."""
    out = bytearray()
    for config in configs:
        encoded = config.encode()
        out += struct.pack(">H", len(encoded)) + encoded
    return bytes(out)


def decode_key_configs(data: bytes) -> list[KeyConfig]:
    """Parse ``application/ohttp-keys``; configs with a KEM we do not know are skipped (§3.2)."""
    configs, pos = [], 0
    while pos < len(data):
        if len(data) < pos + 2:
            raise _bad_config("truncated length prefix")
        (length,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if length == 0 or len(data) < pos + length:
            raise _bad_config("bad key config length")
        try:
            configs.append(KeyConfig.decode(data[pos : pos + length]))
        except OHTTPError as exc:
            if exc.code != "ohttp_unsupported_suite":
                raise
        pos += length
    if not configs:
        raise _bad_config("no usable key config")
    return configs


@dataclass(frozen=True)
class GatewayKey:
    """A gateway's HPKE key pair and its configuration. The private key never leaves memory."""

    config: KeyConfig
    secret: KEMKeyInterface = field(repr=False)

    @classmethod
    def generate(
        cls, key_id: int, suites: tuple[tuple[int, int], ...] = DEFAULT_SUITES
    ) -> GatewayKey:
        return cls.from_private_bytes(key_id, generate_private_key(), suites)

    @classmethod
    def from_private_bytes(
        cls, key_id: int, sk: bytes, suites: tuple[tuple[int, int], ...] = DEFAULT_SUITES
    ) -> GatewayKey:
        if not 0 <= key_id <= 255:
            raise ValueError("key_id must fit in one byte")
        config = KeyConfig(key_id, KEM_X25519, public_key(sk), tuple(suites))
        return cls(config, private_key(sk))
