"""How many requests each tenant may have in flight at once.

The model backends are shared: one tenant that sends many long generations at once would
otherwise hold every slot, and every other tenant would wait behind it. A request past its
tenant's cap is refused at once (429 with ``Retry-After``), before any policy decision, record
or backend call, so it costs the others nothing.
"""

from __future__ import annotations

import threading
import weakref

from proxy.errors import SealgateError

__all__ = ["Lease", "TenantBusy", "TenantLimiter"]


class TenantBusy(SealgateError):
    """The tenant already has as many requests in flight as it may."""

    code = "concurrency_limit_exceeded"
    status = 429
    type = "rate_limit_error"


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
    """In-flight requests per tenant, at most ``limit`` each (0: no limit).

    Called from the event loop; a lease may also be released by the garbage collector on
    another thread, hence the lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> Lease:
        """A lease for one more of ``tenant``'s requests, or :class:`TenantBusy`."""
        if self.limit <= 0:
            return Lease(None, tenant)
        with self._lock:
            count = self._in_flight.get(tenant, 0)
            if count >= self.limit:
                raise TenantBusy(f"this tenant already has {self.limit} requests in flight, "
                                 "the most it may have at once; retry when one has finished")
            self._in_flight[tenant] = count + 1
        return Lease(self, tenant)

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
