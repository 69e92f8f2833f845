"""Passwords, accounts, session cookies, CSRF tokens and the login limiter."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.dashboard._session import LoginLimiter, SessionCodec, load_secret
from proxy.users import InvalidCredentials, UserError, UserStore, hash_password, verify_password


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
                       (("bob", "auditor", "twelve chars!", "acme"), "invalid_role")):
        with pytest.raises(UserError) as info:
            store.create(*args)  # type: ignore[arg-type]
        assert info.value.code == code
    assert [u.username for u in store.users()] == ["ada"]
    store.close()


def test_session_cookie_and_csrf(tmp_path: Path) -> None:
    now = [1000.0]
    codec = SessionCodec(load_secret("", tmp_path), clock=lambda: now[0])
    assert load_secret("", tmp_path) == load_secret("", tmp_path)  # kept once, reused
    cookie = codec.issue("usr_1")
    user, nonce = codec.read(cookie) or ("", "")
    assert user == "usr_1"
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


def test_login_limiter_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert not limiter.blocked("ip:a", "user:x")
        limiter.fail("ip:a", "user:x")
    assert limiter.blocked("ip:a") and limiter.blocked("user:x") and not limiter.blocked("ip:b")
    now[0] = 61
    assert not limiter.blocked("ip:a", "user:x")
