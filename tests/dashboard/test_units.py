"""Passwords, accounts, session cookies and generations, CSRF tokens, the login limiter and
the query-value checks."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from audit import AuditLog
from proxy.dashboard._index import RecordIndex, Seen
from proxy.dashboard._pages import record_page
from proxy.dashboard._query import EARLIEST, LATEST, MAX_PAGE, BadQuery, page_number, time_us, when
from proxy.dashboard._session import LoginLimiter, SessionCodec, load_secret
from proxy.errors import ConfigError
from proxy.users import InvalidCredentials, UserError, UserStore, hash_password, verify_password
from tests.audit.conftest import ORIGIN, make_record


def test_scrypt_hash_round_trip_and_rejections() -> None:
    stored = hash_password("a long enough password")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("a long enough password", stored)
    assert not verify_password("a long enough passwore", stored)
    flipped = stored[:-3] + ("A" if stored[-3] != "A" else "B") + stored[-2:]
    assert not verify_password("a long enough password", flipped)
    assert not verify_password("a long enough password", stored[: len(stored) // 2])
    assert not verify_password("x", "md5$abc")


def test_user_store(tmp_path: Path) -> None:
    store = UserStore(f"sqlite:///{tmp_path / 'sealgate.db'}")
    user = store.create("ada", "reviewer", "twelve chars!", "acme")
    assert store.authenticate("ada", "twelve chars!") == user and store.get(user.id) == user
    with pytest.raises(InvalidCredentials):
        store.authenticate("ada", "wrong password")
    with pytest.raises(InvalidCredentials):
        store.authenticate("nobody", "twelve chars!")
    for args, code in ((("ada", "admin", "twelve chars!"), "user_exists"),
                       (("bob", "root", "twelve chars!"), "invalid_role"),
                       (("bob", "admin", "short"), "weak_password"),
                       (("Bad Name", "admin", "twelve chars!"), "invalid_name"),
                       (("bob", "auditor", "twelve chars!", "acme"), "invalid_role"),
                       (("bob", "reviewer", "twelve chars!", ""), "invalid_tenant")):
        with pytest.raises(UserError) as info:
            store.create(*args)  # type: ignore[arg-type]
        assert info.value.code == code
    assert [u.username for u in store.users()] == ["ada"]
    store.close()


def test_password_change_and_removal(tmp_path: Path) -> None:
    store = UserStore(f"sqlite:///{tmp_path / 'sealgate.db'}")
    user = store.create("ada", "auditor", "twelve chars!")
    other = store.create("bob", "auditor", "twelve chars!")
    assert store.session_user(user.id, 0) == user
    store.set_password("ada", "a new long password")
    assert store.session_user(user.id, 0) is None  # sessions under the old password end
    with pytest.raises(InvalidCredentials):
        store.authenticate("ada", "twelve chars!")
    changed = store.authenticate("ada", "a new long password")
    assert changed.session_generation == 1 and store.session_user(user.id, 1) == changed
    assert store.authenticate("bob", "twelve chars!") == other  # nobody else is touched
    store.remove("ada")
    assert store.session_user(user.id, 1) is None and store.get(user.id) is None
    with pytest.raises(InvalidCredentials):
        store.authenticate("ada", "a new long password")
    for call, code in ((lambda: store.set_password("ada", "a new long password"), "user_not_found"),
                       (lambda: store.remove("ada"), "user_not_found"),
                       (lambda: store.set_password("bob", "short"), "weak_password")):
        with pytest.raises(UserError) as info:
            call()
        assert info.value.code == code
    assert [u.username for u in store.users()] == ["bob"]
    store.close()


def test_session_cookie_and_csrf(tmp_path: Path) -> None:
    now = [1000.0]
    codec = SessionCodec(load_secret("", tmp_path), clock=lambda: now[0])
    assert load_secret("", tmp_path) == load_secret("", tmp_path)  # kept once, reused
    cookie = codec.issue("usr_1", 7)
    user, nonce, generation = codec.read(cookie) or ("", "", 0)
    assert user == "usr_1" and generation == 7
    assert codec.check_csrf(nonce, codec.csrf(nonce))
    assert not codec.check_csrf(nonce, codec.csrf(nonce, "login"))
    assert not codec.check_csrf(None, codec.csrf(nonce))
    payload, mac = cookie.rsplit(".", 1)
    assert codec.read(payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac) is None
    assert codec.read(cookie[:-1]) is None and codec.read("") is None
    other = SessionCodec(load_secret("another secret", tmp_path))
    assert other.read(cookie) is None
    now[0] += 9 * 3600
    assert codec.read(cookie) is None  # expired


@pytest.mark.parametrize("content", ["", "00", "zz" * 32, "ab" * 31, "\xff"])
def test_a_damaged_secret_file_is_refused(tmp_path: Path, content: str) -> None:
    """Left empty or cut short (a start-up killed mid-write, a full disk), it would sign
    sessions under a key anyone can guess: the gateway refuses to start instead."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "session-secret").write_text(content, encoding="latin-1")
    with pytest.raises(ConfigError, match=r"session-secret .* is damaged"):
        load_secret("", tmp_path)


def test_a_new_secret_file_is_whole_and_owner_only(tmp_path: Path) -> None:
    secret = load_secret("", tmp_path)
    path = tmp_path / "keys" / "session-secret"
    assert len(secret) == 32 and path.read_text() == secret.hex()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["session-secret"]  # nothing staged left


def test_cookies_without_a_generation_are_refused(tmp_path: Path) -> None:
    secret = load_secret("", tmp_path)
    codec = SessionCodec(secret)
    body = {"u": "usr_1", "n": "ab" * 16, "e": int(time.time()) + 3600}  # the old format
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    assert codec.read(f"{payload}.{codec._mac(payload.encode())}") is None


def test_ending_sessions_reaches_every_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sealgate.db'}"
    # A TTL no loaded machine outlasts between caching and the check under it; then polled.
    ttl = 3.0
    here, there = UserStore(url, cache_ttl_s=ttl), UserStore(url, cache_ttl_s=ttl)
    user = here.create("ada", "auditor", "twelve chars!")
    assert user.session_generation == 0
    assert here.session_user(user.id, 0) == user and there.session_user(user.id, 0) == user
    here.end_sessions(user.id)
    assert here.session_user(user.id, 0) is None  # at once in the process that signed out
    assert there.session_user(user.id, 0) == user  # cached elsewhere, for the TTL only
    deadline = time.monotonic() + ttl + 60
    while there.session_user(user.id, 0) is not None:  # once the TTL is over
        assert time.monotonic() < deadline, "the sign-out never reached the other store"
        time.sleep(0.05)
    again = here.authenticate("ada", "twelve chars!")
    assert again.session_generation == 1 and there.session_user(user.id, 1) == again
    assert here.session_user("usr_unknown", 0) is None
    here.close()
    there.close()


def test_a_check_racing_a_sign_out_does_not_cache_the_old_generation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = UserStore(f"sqlite:///{tmp_path / 'sealgate.db'}", cache_ttl_s=30.0)
    user = store.create("ada", "auditor", "twelve chars!")
    read, resume = threading.Event(), threading.Event()
    original = store.get

    def paused_get(user_id: str) -> Any:  # the sign-out lands between the read and the cache
        found = original(user_id)
        read.set()
        resume.wait(10)
        return found

    monkeypatch.setattr(store, "get", paused_get)
    check = threading.Thread(target=store.session_user, args=(user.id, 0))
    check.start()
    assert read.wait(10)
    monkeypatch.setattr(store, "get", original)
    store.end_sessions(user.id)
    resume.set()
    check.join(10)
    assert store.session_user(user.id, 0) is None
    store.close()


def test_migration_keeps_existing_accounts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sealgate.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(Path("proxy/tenants/migrations").resolve()))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO dashboard_users (id, username, role, password_hash, created_at) VALUES "
            "('usr_old', 'old', 'admin', :h, :t)"), {"h": hash_password("twelve chars!"),
                                                      "t": datetime(2024, 1, 1)})
    engine.dispose()
    store = UserStore(url)  # upgrades to head
    assert store.authenticate("old", "twelve chars!").session_generation == 0
    store.end_sessions("usr_old")
    assert store.get("usr_old") is not None and store.session_user("usr_old", 1) is not None
    store.close()


def test_login_limiter_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.attempt("ip:a", "user:x") is not None  # each one a wrong password
    assert limiter.attempt("ip:a", "user:x") is None
    assert limiter.blocked("ip:a") and limiter.blocked("user:x") and not limiter.blocked("ip:b")
    now[0] = 61
    assert not limiter.blocked("ip:a", "user:x")


def test_login_limiter_counts_attempts_before_they_are_checked() -> None:
    """Guesses sent together are counted as they arrive, before any password is checked:
    only ``limit`` of them are let through, and a right one among them refunds itself."""
    limiter = LoginLimiter(limit=5, window_s=60, clock=lambda: 0.0)
    stamps = [limiter.attempt("ip:a", "user:x") for _ in range(40)]
    assert sum(s is not None for s in stamps) == 5
    right = stamps[4]
    assert right is not None
    limiter.succeeded(right, "ip:a", "user:x")
    assert not limiter.blocked("user:x") and not limiter.blocked("ip:a")


def test_login_limiter_never_forgets_a_locked_user() -> None:
    now = [0.0]
    limiter = LoginLimiter(limit=5, window_s=300, clock=lambda: now[0], max_keys=100)
    while limiter.attempt("ip:a", "user:admin") is not None:
        pass
    for i in range(5000):  # a flood of failures under made-up names from many addresses
        now[0] += 0.01
        limiter.attempt(f"ip:{i}", f"user:nobody-{i % 50}")
    assert limiter.blocked("user:admin")
    assert limiter.attempt("ip:elsewhere", "user:admin") is None


def test_a_flood_of_user_names_does_not_flush_the_address_limit() -> None:
    """User names and addresses are kept apart: with the table full of made-up user names,
    two addresses taking turns are still held to their limit (they were flushed on every
    attempt, so password spraying across accounts went on unbounded)."""
    now = [0.0]
    limiter = LoginLimiter(limit=5, window_s=300, clock=lambda: now[0], max_keys=100)
    for i in range(200):
        now[0] += 0.01
        limiter.attempt(f"ip:flood-{i % 20}", f"user:sprayed-{i}")
    passed = 0
    for i in range(1000):
        now[0] += 0.01
        passed += limiter.attempt(f"ip:{'ab'[i % 2]}", f"user:target-{i}") is not None
    assert passed == 10  # five per address, then none


def test_a_scoped_reviewer_sees_its_own_tenants_first_and_last_use_only() -> None:
    """Policies and Enclave list when each digest was first and last cited: a reviewer of one
    tenant sees that tenant's times and count, not when another tenant last made a request."""
    index = RecordIndex.__new__(RecordIndex)  # the fold alone: no store is read here
    index.policies = {}
    for tenant, at in (("acme", 10), ("globex", 5), ("acme", 20), ("globex", 90)):
        index.policies.setdefault("sha256:p", Seen(at, at)).add(tenant, at)
    (_, mine, count), = index.seen(index.policies, "acme")
    assert (mine.first_us, mine.last_us, count) == (10, 20, 2)
    (_, everyone, count), = index.seen(index.policies, None)
    assert (everyone.first_us, everyone.last_us, count) == (5, 90, 4)
    assert index.seen(index.policies, "initech") == []


@given(st.text(max_size=30))
def test_page_numbers_are_bounded(text: str) -> None:
    try:
        assert 1 <= page_number(text) <= MAX_PAGE
    except BadQuery as exc:
        assert str(exc) == "page must be a whole number from 1 to 1,000,000,000."


_offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59, seconds=59),
                         max_value=timedelta(hours=23, minutes=59, seconds=59)).map(timezone)


@given(st.one_of(st.text(max_size=70), st.dates().map(str),
                 st.datetimes(timezones=st.none() | _offsets).map(lambda d: d.isoformat())),
       st.booleans())
def test_times_are_bounded_or_refused(text: str, end: bool) -> None:
    try:
        value = when("to", text, end=end)
    except BadQuery as exc:
        assert str(exc).startswith("to must be a date (YYYY-MM-DD)")
        return
    if value is not None:
        first = datetime.combine(EARLIEST, datetime.min.time(), UTC)
        assert first <= value <= datetime.combine(LATEST, datetime.min.time(), UTC) + timedelta(2)
        assert time_us(value) >= 0


def test_end_dates_are_inclusive_and_times_exact() -> None:
    assert when("to", "2024-01-31", end=True) == datetime(2024, 2, 1, tzinfo=UTC)
    assert when("from", "2024-01-31") == datetime(2024, 1, 31, tzinfo=UTC)
    assert when("to", "2024-01-31T10:00", end=True) == datetime(2024, 1, 31, 10, tzinfo=UTC)
    assert when("to", str(LATEST), end=True) == datetime(9999, 1, 1, tzinfo=UTC)
    assert time_us(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
    for bad in ("9999-12-31", str(EARLIEST - timedelta(days=1)), "x", "2024-02-30"):
        with pytest.raises(BadQuery):
            when("to", bad, end=True)
    assert when("to", "") is None and date(1970, 1, 1) == EARLIEST


def test_record_page_of_a_row_edited_outside_the_tree_fails_its_proof(tmp_path: Path) -> None:
    """A record whose stored leaf index was edited to a negative one (an insider with database
    access) shows a failed inclusion proof, not a server error."""
    async def scenario() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        log = await AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}", Ed25519PrivateKey.generate(),
                                  ORIGIN)
        try:
            first, second = [await log.append(make_record(i)) for i in range(2)]
            await log.publish()
            with log.store.engine.begin() as conn:
                conn.execute(sa.text("UPDATE audit_records SET leaf_index = -1 WHERE record_id = :r"),
                             {"r": second.record_id})
            svc, viewer = SimpleNamespace(audit=log), SimpleNamespace(scope=None)
            return (await record_page(svc, viewer, first.record_id),  # type: ignore[arg-type]
                    await record_page(svc, viewer, second.record_id))  # type: ignore[arg-type]
        finally:
            await log.close()

    intact, edited = asyncio.run(scenario())
    assert intact is not None and intact["proof"]["verified"] is True
    assert edited is not None and edited["proof"]["verified"] is False
    assert edited["proof"]["error"] == "invalid_proof_request: leaf index is outside the tree"
