"""TenantLimiter: a cap per tenant, leases given back once; requests and tokens per minute."""

from __future__ import annotations

import pytest

from proxy.tenants import TenantBusy, TenantLimiter, TenantLimits, TenantRateLimited, TenantTokensExhausted
from proxy.tenants._limits import _Buckets


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


def test_tokens_per_minute_admit_until_used_then_the_debt_is_waited_out() -> None:
    clock = Clock()
    limiter = TenantLimiter(0, tokens_per_minute=600, clock=clock)  # 10 tokens a second
    first = limiter.acquire("a")
    second = limiter.acquire("a")  # nothing is used until a request ends
    first.charge(500)
    first.charge(500)  # a lease is charged once
    second.charge(400)  # the budget's last 100, and 300 more: a debt
    with pytest.raises(TenantTokensExhausted) as spent:
        limiter.acquire("a")
    assert spent.value.status == 429 and spent.value.code == "token_rate_limit_exceeded"
    assert spent.value.type == "rate_limit_error"
    assert spent.value.retry_after == 31  # until one token is back: (300 + 1) / 10 s
    limiter.acquire("b").charge(600)  # another tenant has its own budget
    clock.now += 30
    with pytest.raises(TenantTokensExhausted) as spent:
        limiter.acquire("a")
    assert spent.value.retry_after == 1
    clock.now += 1
    limiter.acquire("a").charge(0)  # a request that used nothing costs nothing
    clock.now += 3600  # a long pause refills the budget, never more
    lease = limiter.acquire("a")
    lease.charge(600)
    with pytest.raises(TenantTokensExhausted):
        limiter.acquire("a")


def test_a_request_refused_for_tokens_uses_no_request_of_the_minute() -> None:
    clock = Clock()
    limiter = TenantLimiter(1, per_minute=2, tokens_per_minute=600, clock=clock)
    lease = limiter.acquire("a")  # the first request of the minute
    lease.release()
    lease.charge(610)  # a debt of 10 tokens: 1 s to pay, 2 s until one token is back
    for _ in range(5):
        with pytest.raises(TenantTokensExhausted):
            limiter.acquire("a")
    clock.now += 2
    limiter.acquire("a").release()  # the second request of the minute
    with pytest.raises(TenantRateLimited) as limited:
        limiter.acquire("a")
    assert limited.value.code == "rate_limit_exceeded"
    assert limiter.in_flight("a") == 0


def test_a_tenants_own_limits_replace_the_limiters() -> None:
    clock = Clock()
    limiter = TenantLimiter(0, tokens_per_minute=10, clock=clock)
    own = TenantLimits(concurrent=1, tokens_per_minute=0)
    held = limiter.acquire("big", own)
    held.charge(1_000_000)  # no token budget of its own
    with pytest.raises(TenantBusy):
        limiter.acquire("big", own)
    held.release()
    limiter.acquire("big", own).release()
    limiter.acquire("small").charge(11)
    with pytest.raises(TenantTokensExhausted):
        limiter.acquire("small")


def test_dropping_refilled_buckets_keeps_every_debt() -> None:
    """Past 10,000 tenants the refilled buckets are dropped, each judged at its own rate: a
    tenant in debt at a slow rate keeps its debt whatever rate the newcomer has."""
    clock = Clock()
    buckets = _Buckets(clock)
    buckets.take("slow", 600, 60)  # 60 a minute, 540 owed: about nine minutes to wait
    for i in range(_Buckets._MAX - 1):
        buckets.take(f"t{i}", 1, 60)
    clock.now += 61
    buckets.take("newcomer", 1, 10**9)  # the map is full: refilled buckets go
    assert buckets.wait("slow", 60) == 480
    assert "t0" not in buckets._levels  # refilled after a minute at its own rate
