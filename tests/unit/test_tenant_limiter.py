"""TenantLimiter: a cap per tenant, leases given back once, and by the garbage collector for a
streamed answer that never started."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import pytest

from proxy.tenants import TenantBusy, TenantLimiter, TenantRateLimited


def test_each_tenant_has_its_own_cap() -> None:
    limiter = TenantLimiter(2)
    a1, a2 = limiter.acquire("a"), limiter.acquire("a")
    with pytest.raises(TenantBusy) as busy:
        limiter.acquire("a")
    assert busy.value.status == 429 and busy.value.code == "concurrency_limit_exceeded"
    b = limiter.acquire("b")  # another tenant is not held up
    a1.release()
    a1.release()  # a second release gives back nothing more
    assert limiter.in_flight("a") == 1
    limiter.acquire("a")
    with pytest.raises(TenantBusy):
        limiter.acquire("a")
    a2.release()
    b.release()
    assert limiter.in_flight("b") == 0


def test_no_cap_when_zero() -> None:
    limiter = TenantLimiter(0)
    leases = [limiter.acquire("a") for _ in range(1000)]
    assert limiter.in_flight("a") == 0
    for lease in leases:
        lease.release()


def test_a_stream_collected_before_it_started_gives_its_place_back() -> None:
    limiter = TenantLimiter(1)
    lease = limiter.acquire("a")

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"data: [DONE]\n\n"
        finally:  # never runs: the generator never started
            lease.release()

    answer = stream()
    lease.until_collected(answer)
    assert limiter.in_flight("a") == 1
    del answer
    gc.collect()
    assert limiter.in_flight("a") == 0
    limiter.acquire("a")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_burst_then_refill_evenly() -> None:
    clock = Clock()
    limiter = TenantLimiter(0, per_minute=6, clock=clock)  # one more every 10 s
    for _ in range(6):
        limiter.acquire("a").release()
    with pytest.raises(TenantRateLimited) as limited:
        limiter.acquire("a")
    assert limited.value.status == 429 and limited.value.code == "rate_limit_exceeded"
    assert limited.value.retry_after == 10
    limiter.acquire("b")  # another tenant has its own minute
    clock.now += 4
    with pytest.raises(TenantRateLimited) as limited:
        limiter.acquire("a")
    assert limited.value.retry_after == 6  # a refused request uses up nothing
    clock.now += 6
    limiter.acquire("a")
    with pytest.raises(TenantRateLimited):
        limiter.acquire("a")
    clock.now += 3600  # a long pause refills the burst, never more
    for _ in range(6):
        limiter.acquire("a")
    with pytest.raises(TenantRateLimited):
        limiter.acquire("a")


def test_a_request_refused_for_concurrency_uses_no_minute() -> None:
    clock = Clock()
    limiter = TenantLimiter(1, per_minute=2, clock=clock)
    held = limiter.acquire("a")
    for _ in range(5):
        with pytest.raises(TenantBusy):
            limiter.acquire("a")
    held.release()
    limiter.acquire("a").release()  # the second of its two
    with pytest.raises(TenantRateLimited):
        limiter.acquire("a")
    assert limiter.in_flight("a") == 0
