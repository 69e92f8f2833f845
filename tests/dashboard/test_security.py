"""Sessions, CSRF and the failed-login limit, over plain HTTP against the real gateway."""

from __future__ import annotations

import re
from typing import Any

import httpx

from policy import bundle_digest
from tests.dashboard.conftest import CSRF, PASSWORD, sign_in
from tests.evidence.conftest import Traffic


def _login(traffic: Traffic, user: str, password: str = PASSWORD,
           address: str = "127.0.0.1") -> tuple[httpx.Client, Any]:
    """Signed in from ``address``: the failed-login limit counts per client address."""
    client = httpx.Client(base_url=traffic.gateway.url, timeout=30,
                          transport=httpx.HTTPTransport(local_address=address))
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


# The lockout lasts the limiter's window (300 s) for the user name and the client address, so
# the test that trips it uses an account and an address of its own: any other test, in any
# order, signs in unhindered.
LOCKED_USER, LOCKED_ADDRESS = "lockout1", "127.0.0.9"


def test_failed_logins_are_rate_limited(traffic: Traffic, accounts: Any) -> None:
    statuses = [_login(traffic, LOCKED_USER, "wrong password!!", LOCKED_ADDRESS)[1].status_code
                for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    # the limit holds even for the right password until the window passes
    assert _login(traffic, LOCKED_USER, address=LOCKED_ADDRESS)[1].status_code == 429


def test_a_form_token_works_only_in_its_own_session(traffic: Traffic, accounts: Any) -> None:
    """The CSRF token is bound to the session's nonce: session B's token, though genuine and
    for the same account, is refused in session A, and a refused sign-out ends nothing."""
    url, address = traffic.gateway.url, "127.0.0.12"
    first, second = sign_in(url, "csrf1", address), sign_in(url, "csrf1", address)

    def token(client: httpx.Client) -> str:
        found = CSRF.search(client.get("/dashboard/export").text)
        assert found is not None
        return found.group(1)

    window = {"from": "2020-01-01", "to": "2020-01-31"}
    foreign = first.post("/dashboard/export", data={"csrf": token(second), **window})
    assert foreign.status_code == 403 and "Invalid form token." in foreign.text
    refused = first.post("/dashboard/logout", data={"csrf": token(second)})
    assert refused.status_code == 403 and "Invalid form token." in refused.text
    assert first.get("/dashboard/").status_code == 200  # still signed in
    # The same requests with each session's own token are accepted.
    own = first.post("/dashboard/export", data={"csrf": token(first), **window})
    assert own.status_code == 200 and own.headers["content-type"] == "application/zip"
    signed_out = second.post("/dashboard/logout", data={"csrf": token(second)})
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/dashboard/login"


def test_non_ascii_tokens_and_cookies_are_refused_not_a_crash(traffic: Traffic,
                                                              accounts: Any) -> None:
    client, _ = _login(traffic, "admin1", address="127.0.0.5")
    for path in ("/dashboard/logout", "/dashboard/export"):
        assert client.post(path, data={"csrf": "\u00e9"}).status_code == 403
    anonymous = httpx.Client(base_url=traffic.gateway.url, timeout=30,
                             transport=httpx.HTTPTransport(local_address="127.0.0.5"))
    anonymous.get("/dashboard/login")
    assert anonymous.post("/dashboard/login", data={"csrf": "\u00e9", "username": "admin1",
                                                    "password": PASSWORD}).status_code == 403
    forged = httpx.get(f"{traffic.gateway.url}/dashboard",
                       headers={"cookie": "sg_session=x.\u00e9".encode()})
    assert forged.headers["location"] == "/dashboard/login"


def test_a_scoped_reviewer_sees_only_its_policy_versions_and_rules(traffic: Traffic,
                                                                  accounts: Any) -> None:
    """Bundle data files hold every tenant's contract, and a version no record of the tenant
    cites is none of its business: a tenant's reviewer gets neither, an auditor both."""
    admin, _ = _login(traffic, "admin1", address="127.0.0.5")
    current = re.search(r'<code id="current">([^<]+)</code>', admin.get("/dashboard/policies").text)
    assert current is not None
    folder = traffic.gateway.data_dir / "policies" / current.group(1).removeprefix("sha256:")
    files = {p.relative_to(folder).as_posix(): p.read_bytes()
             for p in folder.rglob("*") if p.is_file()}
    data = next(rel for rel in files if rel.endswith(".yaml"))
    files[data] += b"\n# other-tenant-secret-terms\n"
    other = bundle_digest(files)
    for rel, raw in files.items():
        target = traffic.gateway.data_dir / "policies" / other.removeprefix("sha256:") / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
    audited = admin.get("/dashboard/policies", params={"compare": other}).text
    assert other in audited and "other-tenant-secret-terms" in audited
    reviewer, _ = _login(traffic, "rev-acme", address="127.0.0.5")
    page = reviewer.get("/dashboard/policies", params={"compare": other})
    assert page.status_code == 200
    assert other not in page.text.replace(f"compare={other}", "")  # not offered, not diffed
    assert "other-tenant-secret-terms" not in page.text and 'id="diff"' not in page.text
    assert data not in page.text and "only to accounts not limited to one tenant" in page.text


def test_an_unknown_tenant_filter_is_an_error_not_an_empty_answer(traffic: Traffic,
                                                                  accounts: Any) -> None:
    admin, _ = _login(traffic, "admin1", address="127.0.0.5")
    assert admin.get("/dashboard/records", params={"tenant": "no-such-tenant"}).status_code == 400
    reviewer, _ = _login(traffic, "rev-acme", address="127.0.0.5")
    assert reviewer.get("/dashboard/records",
                        params={"tenant": "no-such-tenant"}).status_code == 403
