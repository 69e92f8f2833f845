"""How many requests each tenant may have in flight at once, start per minute, and how many
tokens its requests may use per minute.

The model backends are shared: one tenant that sends many long generations at once, or a
steady flood of short ones, would otherwise hold every slot, and every other tenant would wait
behind it. A request past its tenant's limits is refused at once (429 with ``Retry-After``),
before any policy decision, record or backend call, so it costs the others nothing.

Tokens are known only once a request has ended, so they are counted then (prompt and
completion tokens, from the backend's usage, or an estimate when its client left before the
backend counted): a request is admitted while its tenant's token
budget for the minute is not used up, and the tokens it used are taken from the budget when it
ends, which may leave the budget in debt; the tenant then waits until the debt is refilled.
A request the tenant's budget admits may thus use more than is left of it: the budget bounds
the tenant's tokens over time, not any one request's (``max_tokens`` and the contract's limit
on it do that).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from proxy.errors import SealgateError

__all__ = ["Lease", "TenantBusy", "TenantLimitExceeded", "TenantLimiter", "TenantLimits",
           "TenantRateLimited", "TenantTokensExhausted"]


class TenantLimits(NamedTuple):
    """One tenant's limits; 0: no limit."""

    concurrent: int = 0
    """Requests in flight at once."""
    requests_per_minute: int = 0
    """Requests started in any minute (a burst of that many, then refilled evenly)."""
    tokens_per_minute: int = 0
    """Prompt and completion tokens used in any minute (likewise)."""
    max_tokens: int = 0
    """The output limit a request may ask for (the contract's ``max_tokens``): what a request
    that asked for none is charged when its backend never counted."""
    models: tuple[str, ...] = ("*",)
    """The models the tenant may use (the contract's ``models``; ``*``: any): the model list
    it is shown."""

    def may_use(self, model: str) -> bool:
        return "*" in self.models or model in self.models


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


class TenantTokensExhausted(TenantRateLimited):
    """The tenant's requests have used as many tokens as it may in the last minute."""

    code = "token_rate_limit_exceeded"


class Lease:
    """One admitted request: ``release`` gives back its place among its tenant's requests in
    flight (once: further calls do nothing), ``charge`` counts the tokens it used (once)."""

    __slots__ = ("_held", "_limiter", "_tenant", "_tokens_per_minute")

    def __init__(self, limiter: TenantLimiter, tenant: str, *, held: bool,
                 tokens_per_minute: int) -> None:
        self._limiter = limiter
        self._tenant = tenant
        self._held = held
        self._tokens_per_minute = tokens_per_minute

    def release(self) -> None:
        held, self._held = self._held, False
        if held:
            self._limiter._release(self._tenant)

    def charge(self, tokens: int) -> None:
        """Take the ``tokens`` the request used from its tenant's budget for the minute."""
        per_minute, self._tokens_per_minute = self._tokens_per_minute, 0
        if per_minute > 0 and tokens > 0:
            self._limiter._charge(self._tenant, tokens, per_minute)


class TenantLimiter:
    """Per tenant: at most ``limit`` requests in flight, at most ``per_minute`` started in any
    minute, and at most ``tokens_per_minute`` tokens used in any minute (each a bucket of that
    size, refilled evenly; 0: no limit), unless the tenant has limits of its own (its
    contract's).

    Thread-safe (a lock guards the counts and buckets), though the gateway calls it from its
    event loop only.
    """

    def __init__(self, limit: int, per_minute: int = 0, tokens_per_minute: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = TenantLimits(limit, per_minute, tokens_per_minute)
        self._in_flight: dict[str, int] = {}
        self._requests = _Buckets(clock)
        self._tokens = _Buckets(clock)
        self._lock = threading.Lock()

    def acquire(self, tenant: str, limits: TenantLimits | None = None) -> Lease:
        """A lease for one more of ``tenant``'s requests, or :class:`TenantBusy`,
        :class:`TenantRateLimited` or :class:`TenantTokensExhausted` (a refused request uses up
        nothing). ``limits`` are this tenant's own, when they differ from the limiter's."""
        limit, per_minute, tokens_per_minute = (limits if limits is not None else self.limits)[:3]
        if limit <= 0 and per_minute <= 0 and tokens_per_minute <= 0:
            return Lease(self, tenant, held=False, tokens_per_minute=0)
        with self._lock:
            count = self._in_flight.get(tenant, 0)
            if 0 < limit <= count:
                raise TenantBusy(f"this tenant already has {limit} requests in flight, "
                                 "the most it may have at once; retry when one has finished")
            if tokens_per_minute > 0:
                wait = self._tokens.wait(tenant, tokens_per_minute)
                if wait:
                    raise TenantTokensExhausted(
                        f"this tenant's requests have used {tokens_per_minute} tokens in the "
                        "last minute, the most they may; retry after the time Retry-After "
                        "gives", retry_after=wait)
            if per_minute > 0:
                wait = self._requests.wait(tenant, per_minute)
                if wait:
                    raise TenantRateLimited(
                        f"this tenant has started {per_minute} requests in the last minute, "
                        "the most it may; retry after the time Retry-After gives",
                        retry_after=wait)
                self._requests.take(tenant, 1.0, per_minute)
            if limit > 0:
                self._in_flight[tenant] = count + 1
        return Lease(self, tenant, held=limit > 0, tokens_per_minute=tokens_per_minute)

    def _charge(self, tenant: str, tokens: int, per_minute: int) -> None:
        with self._lock:
            self._tokens.take(tenant, float(tokens), per_minute)

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


class _Buckets:
    """Buckets of ``size`` per tenant, full at first, refilled evenly over a minute; taking
    from one may leave it in debt (below zero). Used under the limiter's lock."""

    _MAX = 10_000  # past this many tenants with buckets, the full ones are dropped

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._levels: dict[str, tuple[float, float, int]] = {}  # tenant → (level, when, size)

    def _level(self, tenant: str, size: int, now: float) -> float:
        level, when, _ = self._levels.get(tenant, (float(size), now, size))
        return min(float(size), level + (now - when) * size / 60.0)

    def wait(self, tenant: str, size: int) -> int:
        """Whole seconds until the bucket holds at least one; 0 when it does now."""
        level = self._level(tenant, size, self._clock())
        return 0 if level >= 1.0 else max(1, math.ceil((1.0 - level) * 60.0 / size))

    def take(self, tenant: str, amount: float, size: int) -> None:
        now = self._clock()
        level = self._level(tenant, size, now)
        if len(self._levels) >= self._MAX and tenant not in self._levels:
            # Buckets that have refilled, each at its own rate, hold nothing a fresh one would
            # not; one still in debt keeps it.
            self._levels = {t: (k, w, z) for t, (k, w, z) in self._levels.items()
                            if k + (now - w) * z / 60.0 < z}
        self._levels[tenant] = (level - amount, now, size)
