"""Password hashing with scrypt (RFC 7914): ``scrypt$N$r$p$salt$hash`` (base64 fields)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]

# RFC 7914 §2 parameters: N = 2**14, r = 8, p = 1 (16 MiB, tens of milliseconds).
_N, _R, _P, _LEN = 1 << 14, 8, 1, 32
_MAXMEM = 64 * 1024 * 1024


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_LEN, maxmem=_MAXMEM)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = _derive(password, salt, _N, _R, _P)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or int(n) > 1 << 20:
            return False
        want = base64.b64decode(digest, validate=True)
        got = _derive(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)
