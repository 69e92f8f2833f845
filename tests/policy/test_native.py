"""rego-cpp must load before any other C++ library, or every uncached decision leaks memory
(policy/_native.py). Each case runs in a fresh interpreter: import order is per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.server import ROOT

_PROBE = """
import json, sys
{first}
import structlog, sqlalchemy.ext.asyncio  # greenlet, and with it libstdc++
from policy import RegopyEngine, _native
from tests.bench.bench_policy import _inputs

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

engine = RegopyEngine(cache_size=0)
inputs = _inputs(200)
for i in range(400):
    engine.decide_sync(inputs[i % 200])
before = rss_mb()
for i in range(3000):
    engine.decide_sync(inputs[i % 200])
print(json.dumps({{"conflict": _native.ALLOCATOR_CONFLICT, "growth_mb": rss_mb() - before}}))
"""


def _probe(first: str) -> tuple[dict[str, object], str]:
    run = subprocess.run([sys.executable, "-c", _PROBE.format(first=first)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    *logs, last = run.stdout.strip().splitlines()
    return json.loads(last), "\n".join(logs) + run.stderr


@pytest.fixture(autouse=True)
def _linux() -> None:
    need(Path("/proc/self/maps").exists(), "needs /proc (Linux) to see which libraries are loaded")


def test_sealgate_loads_rego_cpp_first_and_decisions_do_not_leak() -> None:
    result, logs = _probe("import proxy.cli  # what the sealgate command imports first")
    assert result["conflict"] is False
    assert "policy_engine_allocator_conflict" not in logs
    assert result["growth_mb"] < 15  # about 0; 3,000 leaking decisions grow ~90 MB


def test_a_process_that_loaded_libstdcxx_first_is_told() -> None:
    result, logs = _probe("import greenlet  # libstdc++ before rego-cpp")
    assert result["conflict"] is True
    assert "policy_engine_allocator_conflict" in logs  # (regopy 1.5 leaks ~30 KB a decision)
