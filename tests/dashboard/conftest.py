"""Dashboard tests share the evidence tests' real gateway and add one account per role."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    for name, (role, tenant) in ACCOUNTS.items():
        args = ["users", "create", name, "--role", role, "--password-stdin"]
        if tenant:
            args += ["--tenant", tenant]
        result = subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=ROOT,
                                env=traffic.gateway.env, input=PASSWORD + "\n",
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    return ACCOUNTS
