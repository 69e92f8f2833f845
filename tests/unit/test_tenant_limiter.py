"""TenantLimiter: a cap per tenant, leases given back once, and by the garbage collector for a
streamed answer that never started."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import pytest

from proxy.tenants import TenantBusy, TenantLimiter


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
