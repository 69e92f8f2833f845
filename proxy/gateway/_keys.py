"""Gateway key pairs: generated in memory, rotated with a grace period (RFC 9458 §3)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

from proxy.ohttp import DEFAULT_SUITES, GatewayKey, encode_key_configs

__all__ = ["KeyManager"]


class KeyManager:
    """Holds the gateway's HPKE key pairs; the private keys exist only in this process.

    There is always one current key. :meth:`rotate` makes a new current key and keeps the
    previous ones valid for ``grace_period`` seconds, so clients with cached configurations
    keep working across a rotation.
    """

    def __init__(
        self,
        *,
        grace_period: float = 3600.0,
        suites: tuple[tuple[int, int], ...] = DEFAULT_SUITES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grace = grace_period
        self._suites = suites
        self._clock = clock
        self._lock = threading.Lock()
        self._retired: dict[int, tuple[GatewayKey, float]] = {}
        self._current = GatewayKey.generate(secrets.randbelow(256), suites)

    @property
    def current_key_id(self) -> int:
        return self._current.config.key_id

    def rotate(self) -> int:
        """Make a new current key; the old one stays valid for the grace period.

        Rotating more often than the grace period allows would leave no free one-byte
        ``key_id``; the key closest to the end of its grace period then retires early, so
        rotation never stops.
        """
        with self._lock:
            self._purge()
            if len(self._retired) >= 255:
                del self._retired[min(self._retired, key=lambda k: self._retired[k][1])]
            used = {self.current_key_id, *self._retired}
            key_id = _free_id(self.current_key_id, used)
            self._retired[self.current_key_id] = (self._current, self._clock() + self._grace)
            self._current = GatewayKey.generate(key_id, self._suites)
            return key_id

    def lookup(self, key_id: int) -> GatewayKey | None:
        """The key with this identifier, if it is current or inside its grace period."""
        with self._lock:
            if key_id == self.current_key_id:
                return self._current
            self._purge()
            entry = self._retired.get(key_id)
            return entry[0] if entry else None

    def key_configs(self) -> bytes:
        """``application/ohttp-keys``: the current configuration first, then the retiring ones."""
        with self._lock:
            self._purge()
            keys = [self._current] + [key for key, _ in self._retired.values()]
        return encode_key_configs(key.config for key in keys)

    def _purge(self) -> None:
        now = self._clock()
        for key_id in [k for k, (_, until) in self._retired.items() if until <= now]:
            del self._retired[key_id]


def _free_id(current: int, used: set[int]) -> int:
    """The next one-byte key identifier after ``current`` that is not in use."""
    for step in range(1, 257):
        if (candidate := (current + step) % 256) not in used:
            return candidate
    raise RuntimeError("all 256 key identifiers are in use")
