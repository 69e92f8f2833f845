"""How many requests each tenant may have in flight at once, and start per minute.

The model backends are shared: one tenant that sends many long generations at once, or a
steady flood of short ones, would otherwise hold every slot, and every other tenant would wait
behind it. A request past its tenant's limits is refused at once (429 with ``Retry-After``),
before any policy decision, record or backend call, so it costs the others nothing.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable

from proxy.errors import SealgateError

__all__ = ["Lease", "TenantBusy", "TenantLimitExceeded", "TenantLimiter", "TenantRateLimited"]


class TenantLimitExceeded(SealgateError):
    """A request past one of its tenant's limits: 429, with ``Retry-After``."""

    status = 429
    type = "rate_limit_error"


class TenantBusy(TenantLimitExceeded):
    """The tenant already has as many requests in flight as it may."""

    code = "concurrency_limit_exceeded"


class TenantRateLimited(TenantLimitExceeded):
    """The tenant has started as many requests as it may in the last minute."""

    code = "rate_limit_exceeded"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        """Whole seconds until the tenant may start another request."""


class Lease:
    """One request's place among its tenant's requests in flight; ``release`` gives it back
    (once: further calls do nothing)."""

    __slots__ = ("_limiter", "_tenant")

    def __init__(self, limiter: TenantLimiter | None, tenant: str) -> None:
        self._limiter = limiter
        self._tenant = tenant

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self._tenant)

    def until_collected(self, owner: object) -> None:
        """Also release when ``owner`` is garbage collected: a streamed answer's generator that
        never started (its client left first) runs no ``finally`` that would release it."""
        weakref.finalize(owner, self.release)


class TenantLimiter:
    """Per tenant: at most ``limit`` requests in flight, and at most ``per_minute`` started in
    any minute (a token bucket of that size, refilled evenly; 0: no limit for either), unless
    the tenant has limits of its own (its contract's).

    Called from the event loop; a lease may also be released by the garbage collector on
    another thread, hence the lock.
    """

    _MAX_BUCKETS = 10_000  # past this many tenants with buckets, the full ones are dropped

    def __init__(self, limit: int, per_minute: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.per_minute = per_minute
        self._clock = clock
        self._in_flight: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant → (tokens, when)
        self._lock = threading.Lock()

    def acquire(self, tenant: str, limits: tuple[int, int] | None = None) -> Lease:
        """A lease for one more of ``tenant``'s requests, or :class:`TenantBusy` or
        :class:`TenantRateLimited` (a refused request uses up nothing). ``limits`` (in flight,
        per minute) are this tenant's own, when they differ from the limiter's."""
        limit, per_minute = limits if limits is not None else (self.limit, self.per_minute)
        if limit <= 0 and per_minute <= 0:
            return Lease(None, tenant)
        with self._lock:
            count = self._in_flight.get(tenant, 0)
            if 0 < limit <= count:
                raise TenantBusy(f"this tenant already has {limit} requests in flight, "
                                 "the most it may have at once; retry when one has finished")
            if per_minute > 0:
                self._take_token(tenant, per_minute)
            if limit <= 0:
                return Lease(None, tenant)
            self._in_flight[tenant] = count + 1
        return Lease(self, tenant)

    def _take_token(self, tenant: str, per_minute: int) -> None:
        now, rate = self._clock(), per_minute / 60.0
        tokens, when = self._buckets.get(tenant, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - when) * rate)
        if tokens < 1.0:
            self._buckets[tenant] = (tokens, now)
            raise TenantRateLimited(
                f"this tenant has started {per_minute} requests in the last minute, the "
                "most it may; retry after the time Retry-After gives",
                retry_after=max(1, math.ceil((1.0 - tokens) / rate)))
        if len(self._buckets) >= self._MAX_BUCKETS and tenant not in self._buckets:
            # Buckets that have refilled (at this tenant's rate: an estimate for others) hold
            # nothing a fresh one would not.
            self._buckets = {t: (k, w) for t, (k, w) in self._buckets.items()
                             if k + (now - w) * rate < per_minute}
        self._buckets[tenant] = (tokens - 1.0, now)

    def in_flight(self, tenant: str) -> int:
        with self._lock:
            return self._in_flight.get(tenant, 0)

    def _release(self, tenant: str) -> None:
        with self._lock:
            count = self._in_flight.get(tenant, 0) - 1
            if count > 0:
                self._in_flight[tenant] = count
            else:
                self._in_flight.pop(tenant, None)
