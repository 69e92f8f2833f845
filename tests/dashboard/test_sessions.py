"""Signing out ends the session on the server: a copied cookie stops working, in this gateway
process at once and in every other process sharing the account database within the cache TTL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.users import UserStore
from tests.dashboard.conftest import CSRF, PASSWORD, sign_in
from tests.evidence.conftest import Traffic
from tests.server import ROOT, Gateway, start_gateway


def _account(traffic: Traffic, name: str) -> str:
    store = UserStore(f"sqlite:///{traffic.gateway.data_dir / 'sealgate.db'}")
    try:
        return store.create(name, "auditor", PASSWORD).id
    finally:
        store.close()


def _sign_in(url: str, user: str, password: str = PASSWORD) -> httpx.Client:
    client = sign_in(url, user, "127.0.0.3", password)
    assert client.cookies.get("sg_session")
    return client


def _sign_out(client: httpx.Client) -> None:
    token = CSRF.search(client.get("/dashboard/").text)
    assert token is not None
    response = client.post("/dashboard/logout", data={"csrf": token.group(1)})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"


def _status(url: str, cookie: str) -> int:
    return httpx.get(f"{url}/dashboard/records", cookies={"sg_session": cookie},
                     timeout=30).status_code


def test_signed_out_cookie_is_refused(traffic: Traffic, accounts: Any) -> None:
    _account(traffic, "signout1")
    url = traffic.gateway.url
    first, other = _sign_in(url, "signout1"), _sign_in(url, "signout1")
    copied = str(first.cookies.get("sg_session"))
    assert _status(url, copied) == 200
    _sign_out(first)
    assert _status(url, copied) == 303  # the copy no longer works, not just the browser's
    assert other.get("/dashboard/").status_code == 303  # sign-out ends every session
    fresh = _sign_in(url, "signout1")
    assert fresh.get("/dashboard/records").status_code == 200
    assert _status(url, copied) == 303  # signing in again does not revive the old cookie


@pytest.fixture(scope="module")
def replica(traffic: Traffic, evidence_workdir: Path) -> Iterator[Gateway]:
    """A second gateway process sharing the first one's account database and session secret."""
    first = traffic.gateway
    data_dir = evidence_workdir / "replica-data"
    (data_dir / "keys").mkdir(parents=True)
    shutil.copy(first.data_dir / "keys" / "session-secret", data_dir / "keys" / "session-secret")
    config = Path(first.env["SEALGATE_CONFIG"]).read_text()
    gateway = start_gateway(evidence_workdir, config, data_dir=data_dir, extra_env={
        "SEALGATE_DATABASE_URL": f"sqlite:///{first.data_dir / 'sealgate.db'}"})
    yield gateway
    gateway.stop()


def test_sign_out_reaches_other_gateway_processes(traffic: Traffic, accounts: Any,
                                                  replica: Gateway) -> None:
    _account(traffic, "signout2")
    client = _sign_in(traffic.gateway.url, "signout2")
    copied = str(client.cookies.get("sg_session"))
    assert _status(replica.url, copied) == 200  # one session, valid on both processes
    _sign_out(client)
    deadline = time.monotonic() + 5  # the account cache lives one second
    while _status(replica.url, copied) != 303:
        assert time.monotonic() < deadline, "the other process still accepts the cookie"
        time.sleep(0.1)
    # and a new sign-in on one process is accepted at once by the other, cache or not
    again = str(_sign_in(traffic.gateway.url, "signout2").cookies.get("sg_session"))
    assert _status(replica.url, again) == 200


def _cli(gateway: Gateway, *args: str, stdin: str = "") -> str:
    result = subprocess.run([sys.executable, "-m", "proxy.cli", "users", *args], cwd=ROOT,
                            env=gateway.env, input=stdin, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _refused_within_ttl(url: str, cookie: str) -> None:
    deadline = time.monotonic() + 5  # the serving process caches accounts for one second
    while _status(url, cookie) != 303:
        assert time.monotonic() < deadline, "the gateway still accepts the cookie"
        time.sleep(0.1)


def test_a_password_change_or_removal_from_the_cli_ends_sessions(traffic: Traffic,
                                                                 accounts: Any) -> None:
    _account(traffic, "rotated1")
    url, gateway = traffic.gateway.url, traffic.gateway
    copied = str(_sign_in(url, "rotated1").cookies.get("sg_session"))
    assert _status(url, copied) == 200
    new = "another long password"
    assert "sessions have ended" in _cli(gateway, "passwd", "rotated1", "--password-stdin",
                                         stdin=new + "\n")
    _refused_within_ttl(url, copied)
    client = _sign_in(url, "rotated1", new)
    fresh = str(client.cookies.get("sg_session"))
    assert _status(url, fresh) == 200
    assert "removed rotated1" in _cli(gateway, "remove", "rotated1")
    _refused_within_ttl(url, fresh)
    missing = subprocess.run([sys.executable, "-m", "proxy.cli", "users", "remove", "rotated1"],
                             cwd=ROOT, env=gateway.env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no user 'rotated1'" in missing.stderr
