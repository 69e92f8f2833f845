"""Replay protection for sealed requests (RFC 9458 §6.5): a Date window plus seen encapsulations."""

from __future__ import annotations

import heapq
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

from ._errors import GatewayError

__all__ = ["Identify", "ReplayGuard"]

Identify = Callable[[str | None], Awaitable[str | None]]
"""Who answers for a sealed request: the tenant id its ``Authorization`` value authenticates,
or ``None`` (no key, or one that is not valid)."""


async def _anonymous(authorization: str | None) -> None:
    return None


class ReplayGuard:
    """Rejects inner requests whose ``Date`` is outside ``window`` seconds of now, and any
    encapsulation (keyed by its ``enc``) seen before while its Date is still inside the window.

    An entry is needed only until its Date leaves the window (a replay after that is stale), so
    memory stays bounded by the request rate times the window; ``max_entries`` caps it outright.

    Forgetting is for good: if the clock steps back (an NTP correction, a VM restored from a
    snapshot), a Date whose entry may already have been forgotten would be inside the window
    again and its replay unnoticed. So a Date is also stale when its window ended before the
    latest time the guard has seen; after a step back the guard refuses requests (fails closed)
    until the clock has caught up or the client's Date is recent enough.

    Anyone holding the public key configuration can seal requests, so the entries are
    accounted to who answers for them (``identify``): the tenant whose API key the inner
    request carries, or no one. Each tenant may hold at most ``max_per_owner`` entries and
    requests without a valid key ``max_anonymous`` together, so no party without a key, and no
    single tenant, can fill the set and lock everyone else out (503 ``replay_guard_full``).
    Every request is still checked against the one set, whoever answers for it.
    """

    def __init__(
        self,
        *,
        window: float = 60.0,
        max_entries: int = 1_000_000,
        max_per_owner: int | None = None,
        max_anonymous: int | None = None,
        clock: Callable[[], float] = time.time,
        identify: Identify = _anonymous,
    ) -> None:
        self.window = window
        self.identify = identify
        self._max = max_entries
        self._owner_max = max_per_owner if max_per_owner is not None else max(1, max_entries // 4)
        self._anonymous_max = (max_anonymous if max_anonymous is not None
                               else max(1, max_entries // 16))
        self._clock = clock
        self._seen: set[bytes] = set()
        self._held: dict[str | None, int] = {}  # entries each owner holds (None: no key)
        self._expiry: list[tuple[float, bytes, str | None]] = []
        self._latest = float("-inf")  # entries whose window ended before this are forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, enc: bytes, date: str | None, owner: str | None = None) -> None:
        """Accept and remember this request for ``owner`` (``identify``), or raise
        :class:`GatewayError`."""
        now = self._clock()
        sent = _parse_date(date)
        if abs(now - sent) > self.window or sent + self.window < self._latest:
            raise GatewayError("stale_request", "request Date is outside the accepted window")
        self._evict(now)
        if enc in self._seen:
            raise GatewayError("replayed_request", "this request was already received")
        held = self._held.get(owner, 0)
        if len(self._seen) >= self._max:
            raise GatewayError("replay_guard_full", "too many recent requests", status=503)
        if held >= (self._anonymous_max if owner is None else self._owner_max):
            detail = ("too many recent requests without a valid API key" if owner is None
                      else "too many recent requests with this API key's tenant")
            raise GatewayError("replay_guard_full", detail, status=503)
        self._seen.add(enc)
        self._held[owner] = held + 1
        heapq.heappush(self._expiry, (sent + self.window, enc, owner))

    def _evict(self, now: float) -> None:
        self._latest = max(self._latest, now)
        while self._expiry and self._expiry[0][0] < now:
            _, enc, owner = heapq.heappop(self._expiry)
            self._seen.discard(enc)
            if (left := self._held[owner] - 1) > 0:
                self._held[owner] = left
            else:
                del self._held[owner]


def _parse_date(value: str | None) -> float:
    if not value:
        raise GatewayError("stale_request", "request has no Date header")
    try:
        sent = parsedate_to_datetime(value)
        if sent.tzinfo is None:  # "-0000": UTC, its sender's offset unknown (RFC 5322 §3.3)
            sent = sent.replace(tzinfo=UTC)
        return sent.timestamp()
    except (TypeError, ValueError, OverflowError):  # a year past datetime's range overflows
        raise GatewayError("stale_request", "request Date is not an HTTP date") from None
