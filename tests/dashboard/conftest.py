"""Dashboard tests share the evidence tests' real gateway and add one account per role."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from proxy.users import UserStore
from tests.evidence.conftest import Traffic, evidence_workdir, traffic  # noqa: F401
from tests.server import ROOT

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]*)"')
ACCOUNTS = {
    "admin1": ("admin", None),
    "auditor1": ("auditor", None),
    "rev-acme": ("reviewer", "acme"),
    "rev-globex": ("reviewer", "globex"),
    "lockout1": ("auditor", None),  # tests/dashboard/test_security.py locks it out: no one else
    "csrf1": ("auditor", None),  # tests/dashboard/test_security.py signs it out
}


@pytest.fixture(scope="session")
def accounts(traffic: Traffic) -> dict[str, tuple[str, str | None]]:  # noqa: F811
    store = UserStore(f"sqlite:///{traffic.gateway.data_dir / 'sealgate.db'}")
    for name, (role, tenant) in list(ACCOUNTS.items())[1:]:
        store.create(name, role, PASSWORD, tenant)
    store.close()
    for name, (role, tenant) in list(ACCOUNTS.items())[:1]:  # one through the CLI
        args = ["users", "create", name, "--role", role, "--password-stdin"]
        if tenant:
            args += ["--tenant", tenant]
        result = subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=ROOT,
                                env=traffic.gateway.env, input=PASSWORD + "\n",
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    listing = subprocess.run([sys.executable, "-m", "proxy.cli", "users", "list", "--json"],
                             cwd=ROOT, env=traffic.gateway.env, capture_output=True, text=True,
                             timeout=60)
    assert {u["username"] for u in json.loads(listing.stdout)} == set(ACCOUNTS)
    return ACCOUNTS


def dashboard_client(url: str, address: str) -> httpx.Client:
    """A client on its own loopback address: the failed-sign-in limit counts per address, and
    the tests that trip it must not lock out the others."""
    return httpx.Client(base_url=url, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def sign_in(url: str, user: str, address: str, password: str = PASSWORD) -> httpx.Client:
    """A client signed in as ``user`` through the sign-in form."""
    client = dashboard_client(url, address)
    token = CSRF.search(client.get("/dashboard/login").text)
    assert token is not None
    response = client.post("/dashboard/login", data={"csrf": token.group(1), "username": user,
                                                     "password": password})
    assert response.status_code == 303
    return client
