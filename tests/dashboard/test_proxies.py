"""Behind an ingress every client arrives from the ingress's address. With ``trusted_proxies``
the per-address sign-in limit counts the client its ``X-Forwarded-For`` names; from any other
peer that header is ignored, so nobody dodges the limit by sending one."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.users import UserStore
from tests.dashboard.conftest import CSRF, PASSWORD, dashboard_client
from tests.server import Gateway, fast_config, start_gateway

INGRESS, OTHER = "127.0.0.9", "127.0.0.10"


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), fast_config(9, trusted_proxies=f"{INGRESS},::1"))
        try:
            users = UserStore(f"sqlite:///{gw.data_dir / 'sealgate.db'}")
            users.create("admin1", "admin", PASSWORD)
            users.close()
            yield gw
        finally:
            gw.stop()


def _sign_in(gw: Gateway, peer: str, client: str, user: str, password: str) -> int:
    with dashboard_client(gw.url, peer) as http:
        http.headers["X-Forwarded-For"] = client
        token = CSRF.search(http.get("/dashboard/login").text)
        assert token is not None
        response = http.post("/dashboard/login", data={"csrf": token.group(1), "username": user,
                                                       "password": password})
        return response.status_code


def test_the_sign_in_limit_counts_clients_behind_a_trusted_proxy(gateway: Gateway) -> None:
    failed = [_sign_in(gateway, INGRESS, "203.0.113.5", f"guess{i}", "wrong password!!")
              for i in range(6)]
    assert failed == [401] * 5 + [429]  # that client is limited …
    # … and another client behind the same ingress is not
    assert _sign_in(gateway, INGRESS, "203.0.113.6", "admin1", PASSWORD) == 303


def test_forwarded_for_from_an_untrusted_peer_is_ignored(gateway: Gateway) -> None:
    failed = [_sign_in(gateway, OTHER, f"198.51.100.{i}", f"other{i}", "wrong password!!")
              for i in range(6)]
    assert failed == [401] * 5 + [429]  # counted against the peer, whatever the header says


def test_a_trusted_proxy_that_is_not_an_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=re.escape("trusted_proxies: 'ingress.local'")):
        start_gateway(tmp_path, fast_config(9, trusted_proxies="ingress.local"), timeout=30)
