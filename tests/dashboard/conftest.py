"""Dashboard tests share the evidence tests' real gateway and add one account per role."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proxy.users import UserStore
from tests.evidence.conftest import Traffic, evidence_workdir, traffic  # noqa: F401
from tests.server import ROOT

PASSWORD = "correct horse battery staple"
ACCOUNTS = {
    "admin1": ("admin", None),
    "auditor1": ("auditor", None),
    "rev-acme": ("reviewer", "acme"),
    "rev-globex": ("reviewer", "globex"),
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
