"""Sessions, CSRF and the failed-login limit, over plain HTTP against the real gateway."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.dashboard.conftest import PASSWORD
from tests.evidence.conftest import Traffic


def _login(traffic: Traffic, user: str, password: str = PASSWORD) -> tuple[httpx.Client, Any]:
    client = httpx.Client(base_url=traffic.gateway.url, timeout=30)
    form = client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    response = client.post("/dashboard/login", data={"csrf": csrf.group(1), "username": user,
                                                     "password": password})
    return client, response


def test_session_cookie_flags_and_headers(traffic: Traffic, accounts: Any) -> None:
    client, response = _login(traffic, "admin1")
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text and "https://" not in page.text


def test_unauthenticated_and_forged_sessions_go_to_login(traffic: Traffic, accounts: Any) -> None:
    client = httpx.Client(base_url=traffic.gateway.url, timeout=30)
    assert client.get("/dashboard/health").headers["location"] == "/dashboard/login"
    client.cookies.set("sg_session", "eyJ1IjoidXNyXzEifQ.00", path="/dashboard")
    assert client.get("/dashboard").status_code == 303


def test_posts_need_the_csrf_token(traffic: Traffic, accounts: Any) -> None:
    client, _ = _login(traffic, "auditor1")
    response = client.post("/dashboard/export", data={"from": "2020-01-01", "to": "2030-01-01"})
    assert response.status_code == 403
    assert client.post("/dashboard/logout", data={"csrf": "x"}).status_code == 403
    anonymous = httpx.Client(base_url=traffic.gateway.url, timeout=30)
    login = anonymous.post("/dashboard/login", data={"username": "admin1", "password": PASSWORD})
    assert login.status_code == 403


def test_failed_logins_are_rate_limited(traffic: Traffic, accounts: Any) -> None:
    statuses = [_login(traffic, "auditor1", "wrong password!!")[1].status_code for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    # the limit holds even for the right password until the window passes
    assert _login(traffic, "auditor1")[1].status_code == 429
