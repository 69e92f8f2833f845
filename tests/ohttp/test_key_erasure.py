"""Response keys are erased after use (RFC 9458 §4.4 derivation): once an exchange is sealed,
neither the exported secret, the HKDF PRK nor the AEAD key is left in the gateway's memory.

The gateway side runs in a child process, which scans its own writable memory
(``/proc/self/mem``) for the values the client derives from its side of the exchange. A random
control value, sent the same way, counts the copies that sending the values itself leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.ohttp import GatewayKey, KeyConfig, _hpke, decapsulate_request, encapsulate_request
from proxy.ohttp._hpke import _hkdf_expand, generate_private_key, public_key, wipe
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]

GATEWAY = r"""
import gc, json, sys
from proxy.ohttp import GatewayKey, decapsulate_request

sk, request = (bytes.fromhex(x) for x in sys.stdin.readline().split())
key = GatewayKey.from_private_bytes(1, sk)


def exchange() -> bytes:
    _, context = decapsulate_request(request, {1: key}.get)
    return context.seal_response(b"\x01\x40\xc8")


print(exchange().hex(), flush=True)
gc.collect()
needles = {k: bytes.fromhex(v) for k, v in json.loads(sys.stdin.readline()).items()}
found = dict.fromkeys(needles, 0)
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps.read().splitlines():
        span, perms = line.split()[:2]
        if not perms.startswith("rw"):
            continue
        low, high = (int(x, 16) for x in span.split("-"))
        try:
            mem.seek(low)
            data = mem.read(high - low)
        except (OSError, ValueError, OverflowError):
            continue
        for name, needle in needles.items():
            found[name] += data.count(needle)
print(json.dumps(found), flush=True)
"""


def test_wipe_zeroes_owned_buffers() -> None:
    secret, scratch = os.urandom(32), bytearray(os.urandom(16))
    wipe(secret)
    wipe(scratch)
    assert secret == bytes(32) and scratch == bytes(16)


def test_no_response_key_material_survives_the_exchange() -> None:
    need(Path("/proc/self/mem").exists(), "reading a process's own memory needs Linux /proc")
    sk = generate_private_key()
    config = KeyConfig(1, 0x20, public_key(sk), ((1, 1),))
    request, client = encapsulate_request(config, b"\x00\x03GET\x05https\x00\x01/")
    child = subprocess.Popen([sys.executable, "-c", GATEWAY], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(f"{sk.hex()} {request.hex()}\n")
        child.stdin.flush()
        sealed = bytes.fromhex(child.stdout.readline())
        secret = client.hpke_context().export(b"message/bhttp response", 16)
        prk = hmac.digest(client.enc + sealed[:16], secret, hashlib.sha256)
        key = bytes(_hkdf_expand(prk, b"key", 16))
        needles = {"aead_key": key, "prk": prk, "exported_secret": secret,
                   "control": os.urandom(16)}
        child.stdin.write(json.dumps({k: v.hex() for k, v in needles.items()}) + "\n")
        child.stdin.flush()
        found = json.loads(child.stdout.readline())
    finally:
        child.stdin.close()
        child.wait(30)
    assert found["control"] >= 1  # the scan sees values the child holds
    assert {k: found[k] - found["control"] for k in ("aead_key", "prk", "exported_secret")} == {
        "aead_key": 0, "prk": 0, "exported_secret": 0}


class KeyKeepingAESGCM:
    """Fault injection: an AES-GCM that keeps its key object and reads it at every operation,
    as ``cryptography`` built on OpenSSL before 3.2 does."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        return AESGCM(self._key).encrypt(nonce, data, aad)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        return AESGCM(self._key).decrypt(nonce, data, aad)


def test_a_cipher_that_keeps_its_key_object_gets_it_unwiped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiping the key given to such a cipher would seal every response under an all-zero key
    (both ends alike, so nothing would fail): the safety probe finds out, and the response is
    sealed under the key RFC 9458 derives."""
    monkeypatch.setattr(_hpke, "AESGCM", KeyKeepingAESGCM)
    monkeypatch.setattr(_hpke, "_WIPE_SAFE", _hpke._wipe_safety())
    assert _hpke._WIPE_SAFE[_hpke.AEAD_AES_128_GCM] is False
    assert _hpke._WIPE_SAFE[_hpke.AEAD_CHACHA20_POLY1305] is True  # the real one copies it
    key = GatewayKey.generate(1)
    request, client = encapsulate_request(key.config, b"\x00\x03GET\x05https\x00\x01/")
    _, server = decapsulate_request(request, {1: key}.get)
    sealed = server.seal_response(b"answer")
    secret = client.hpke_context().export(b"message/bhttp response", 16)
    prk = hmac.digest(client.enc + sealed[:16], secret, hashlib.sha256)
    aead_key, nonce = (bytes(_hkdf_expand(prk, label, 12 if label == b"nonce" else 16))
                       for label in (b"key", b"nonce"))
    assert AESGCM(aead_key).decrypt(nonce, sealed[16:], None) == b"answer"
