"""KeyManager and ReplayGuard on their own: ids, rotation, windows, bounded memory."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from proxy.gateway import GatewayError, KeyManager, ReplayGuard
from proxy.ohttp import decode_key_configs


def test_key_ids_are_distinct_across_rotations() -> None:
    keys = KeyManager(grace_period=1e9)
    ids = [keys.current_key_id] + [keys.rotate() for _ in range(20)]
    assert len(set(ids)) == 21
    configs = decode_key_configs(keys.key_configs())
    assert next(c.key_id for c in configs) == keys.current_key_id
    assert {c.key_id for c in configs} == set(ids)
    assert len({c.public_key for c in configs}) == 21


def test_private_key_is_not_in_repr() -> None:
    keys = KeyManager()
    key = keys.lookup(keys.current_key_id)
    assert key is not None and "secret" not in repr(key)


def _date(t: float) -> str:
    return formatdate(t, usegmt=True)


def test_replay_window_and_eviction() -> None:
    now = [1_000_000.0]
    guard = ReplayGuard(window=60, clock=lambda: now[0])
    guard.check(b"a" * 32, _date(now[0]))
    with pytest.raises(GatewayError) as err:
        guard.check(b"a" * 32, _date(now[0]))
    assert err.value.code == "replayed_request" and str(err.value).startswith("replayed_request: ")
    for i in range(100):
        guard.check(bytes([i]) * 32 + b"x", _date(now[0]))
    assert len(guard) == 101
    now[0] += 61
    guard.check(b"fresh" * 8, _date(now[0]))
    assert len(guard) == 1  # everything outside the window was evicted
    with pytest.raises(GatewayError) as err:
        guard.check(b"a" * 32, _date(now[0] - 61))  # the old replay is now merely stale
    assert err.value.code == "stale_request"


def test_a_clock_stepping_back_does_not_reopen_the_window() -> None:
    """An entry forgotten once its window ended must stay stale when the clock steps back, or
    the request it stood for could be replayed (an NTP step, a VM restored from a snapshot)."""
    now = [4_000_000.0]
    guard = ReplayGuard(window=60, clock=lambda: now[0])
    captured = _date(now[0])
    guard.check(b"r" * 32, captured)
    now[0] += 120
    guard.check(b"later" * 8, _date(now[0]))  # evicts the first entry
    assert len(guard) == 1
    now[0] -= 110  # the captured request's Date is inside the window of this clock again
    with pytest.raises(GatewayError) as err:
        guard.check(b"r" * 32, captured)
    assert err.value.code == "stale_request"
    # A Date whose window reaches the latest time seen is still checked, and accepted once.
    recent = _date(now[0] + 55)
    guard.check(b"n" * 32, recent)
    with pytest.raises(GatewayError) as err:
        guard.check(b"n" * 32, recent)
    assert err.value.code == "replayed_request"
    now[0] += 200  # the clock has caught up: ordinary requests pass again
    guard.check(b"m" * 32, _date(now[0]))


@pytest.mark.parametrize("date", [None, "", "not a date", _date(0)])
def test_stale_or_bad_dates(date: str | None) -> None:
    with pytest.raises(GatewayError) as err:
        ReplayGuard().check(b"e" * 32, date)
    assert err.value.code == "stale_request" and err.value.status == 400


def test_future_dates_beyond_the_window_are_stale() -> None:
    now = 2_000_000.0
    guard = ReplayGuard(window=30, clock=lambda: now)
    guard.check(b"b" * 32, _date(now + 20))
    with pytest.raises(GatewayError):
        guard.check(b"c" * 32, _date(now + 40))


def test_a_date_in_negative_zero_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """RFC 5322's "-0000" is UTC with the sender's offset unknown; it was read as local time,
    so a fresh request was stale on a gateway whose zone is not UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = 1_800_000_000.0
        ReplayGuard(window=60, clock=lambda: now).check(b"d" * 32, _date(now).replace("GMT",
                                                                                        "-0000"))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_capacity_is_bounded_and_fails_closed() -> None:
    now = 3_000_000.0
    guard = ReplayGuard(max_entries=3, max_per_owner=3, clock=lambda: now)
    for i in range(3):
        guard.check(bytes([i]) * 32, _date(now), "t1")
    with pytest.raises(GatewayError) as err:
        guard.check(b"z" * 32, _date(now), "t2")
    assert err.value.code == "replay_guard_full" and err.value.status == 503


def test_no_one_without_a_key_and_no_single_tenant_fills_the_guard() -> None:
    """Anyone with the key configuration can seal requests: those without a valid API key
    share a sixteenth of the entries, each tenant a quarter, so neither locks others out."""
    now = [5_000_000.0]
    guard = ReplayGuard(max_entries=64, clock=lambda: now[0])
    for i in range(4):
        guard.check(b"anon%d" % i, _date(now[0]))
    with pytest.raises(GatewayError) as err:
        guard.check(b"anon-more", _date(now[0]))
    assert err.value.code == "replay_guard_full" and err.value.status == 503
    assert "without a valid API key" in err.value.detail
    for i in range(16):
        guard.check(b"a%d" % i, _date(now[0]), "tenant-a")
    with pytest.raises(GatewayError) as err:
        guard.check(b"a-more", _date(now[0]), "tenant-a")
    assert err.value.code == "replay_guard_full" and "tenant" in err.value.detail
    guard.check(b"b0", _date(now[0]), "tenant-b")  # another tenant is not held back
    assert len(guard) == 21
    # Shares are given back as entries leave the window.
    now[0] += 61
    guard.check(b"anon-later", _date(now[0]))
    for i in range(16):
        guard.check(b"a-later%d" % i, _date(now[0]), "tenant-a")
    assert len(guard) == 17


def test_a_replay_is_caught_whoever_answers_for_it() -> None:
    """One set for everyone: a request first seen without a valid key (say, before the key
    was created) is still a replay when it comes back with a key that now authenticates."""
    now = 6_000_000.0
    guard = ReplayGuard(clock=lambda: now)
    date = _date(now)
    guard.check(b"e" * 32, date)
    for owner in ("tenant-a", None):
        with pytest.raises(GatewayError) as err:
            guard.check(b"e" * 32, date, owner)
        assert err.value.code == "replayed_request"
