"""Signed session cookies, CSRF tokens bound to them, and the failed-login limiter.

A session cookie is ``base64url(JSON {u, n, g, e}) "." hex(HMAC-SHA256(secret, payload))``: user
id, a random nonce, the account's session generation and the expiry. The signature makes a
cookie unforgeable; the generation makes it revocable: signing out bumps the account's
generation in the database, and a cookie of an older generation is refused (OWASP Session
Management Cheat Sheet, "Session Expiration": invalidate on the server side).

The CSRF token of a session (synchronizer token pattern, OWASP CSRF Prevention Cheat Sheet) is
HMAC(secret, "csrf:" + nonce); before login a random pre-session cookie plays the nonce's part.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from proxy.errors import ConfigError

__all__ = ["LoginLimiter", "SessionClaims", "SessionCodec", "load_secret"]

SESSION_TTL_S = 8 * 3600


def load_secret(configured: str, data_dir: Path) -> bytes:
    """The configured secret, else one generated once and kept (mode 0600) in the data dir.

    The file appears whole or not at all: written and flushed under a temporary name, then
    linked into place (a link never replaces a file, so of two processes starting at once one
    makes it and the other reads it). A file that does not hold 32 hex-encoded bytes is refused:
    sessions signed under a short or empty key could be forged."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    path = data_dir / "keys" / "session-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        secret = secrets.token_bytes(32)
        staged = path.with_name(f".session-secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secret.hex())
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process's is as good
                os.link(staged, path)
        finally:
            staged.unlink()
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except (ValueError, UnicodeDecodeError):
        secret = b""
    if len(secret) != 32:
        raise ConfigError(f"{path.name} in {path.parent} is damaged: remove it to make a new one "
                          "(every dashboard session ends)")
    return secret


class SessionClaims(NamedTuple):
    """What a valid, unexpired cookie says; the generation is checked against the account."""

    user: str
    nonce: str
    generation: int


class SessionCodec:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret, self._clock = secret, clock

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def issue(self, user_id: str, generation: int) -> str:
        body = {"u": user_id, "n": secrets.token_hex(16), "g": generation,
                "e": int(self._clock()) + SESSION_TTL_S}
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(payload.encode())}"

    def read(self, cookie: str | None) -> SessionClaims | None:
        """The claims of a validly signed, unexpired cookie; None otherwise."""
        if not cookie or "." not in cookie:
            return None
        payload, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(_raw(mac), self._mac(_raw(payload)).encode()):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            claims = SessionClaims(str(body["u"]), str(body["n"]), int(body["g"]))
            expiry = int(body["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None  # cookies from before generations existed ("g" missing) sign in again
        return claims if expiry > self._clock() else None

    def csrf(self, nonce: str, purpose: str = "csrf") -> str:
        return self._mac(f"{purpose}:{nonce}".encode())

    def check_csrf(self, nonce: str | None, token: object, purpose: str = "csrf") -> bool:
        return bool(nonce) and isinstance(token, str) and hmac.compare_digest(
            _raw(token), self.csrf(str(nonce), purpose).encode())


def _raw(text: str) -> bytes:
    """A client-supplied string as bytes for ``hmac.compare_digest`` (which refuses non-ASCII
    strings with a TypeError)."""
    return text.encode("utf-8", "surrogateescape")


class LoginLimiter:
    """At most ``limit`` failed logins per key (client address, user name) per ``window_s``.

    An attempt is counted *before* its password is checked (:meth:`attempt`) and refunded
    when it succeeds, so concurrent guesses cannot all pass the check before any failure is
    counted. User names and addresses are kept apart: past ``max_keys`` addresses, expired
    ones go first, then the oldest (never one being counted now), so a flood of user names
    cannot flush the addresses; a user name inside its window is never forgotten, so no flood
    unlocks an account."""

    def __init__(self, limit: int = 5, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self._limit, self._window, self._clock, self._max = limit, window_s, clock, max_keys
        self._users: dict[str, list[float]] = {}
        self._addresses: dict[str, list[float]] = {}

    def _table(self, key: str) -> dict[str, list[float]]:
        return self._users if key.startswith("user:") else self._addresses

    def _recent(self, key: str) -> list[float]:
        now, table = self._clock(), self._table(key)
        recent = [t for t in table.get(key, ()) if now - t < self._window]
        if recent:
            table[key] = recent
        else:
            table.pop(key, None)
        return recent

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(k)) >= self._limit for k in keys)

    def attempt(self, *keys: str) -> float | None:
        """Count an attempt against every key, or ``None`` (counting nothing) when one of them
        is at the limit; pass the returned stamp to :meth:`succeeded` if it was right."""
        if self.blocked(*keys):
            return None
        self._evict(set(keys))
        stamp = self._clock()
        for key in keys:
            self._table(key).setdefault(key, []).append(stamp)
        return stamp

    def succeeded(self, stamp: float, address: str, user: str) -> None:
        """A right password: its attempt is refunded and the user name's failures cleared."""
        self._users.pop(user, None)
        times = self._addresses.get(address, [])
        if stamp in times:
            times.remove(stamp)

    def _evict(self, keep: set[str]) -> None:
        for table in (self._users, self._addresses):
            if len(table) >= self._max:
                for key in list(table):
                    self._recent(key)
        for key in list(self._addresses):
            if len(self._addresses) < self._max:
                break
            if key not in keep:
                del self._addresses[key]
