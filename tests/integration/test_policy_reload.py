"""Hot reload of a policy bundle in a running server: no request fails, a broken bundle is
refused without stopping the reloads, and the digest in the identity document and the records
changes to the new bundle's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from policy import load_bundle
from tests.integration.conftest import gateway_config
from tests.server import ROOT, Gateway, Proc, start_gateway


def test_bundle_hot_reload(workdir: Path, fast_upstream: Proc) -> None:
    bundle_dir = workdir / "bundle"
    source = load_bundle().root
    shutil.copytree(source, bundle_dir, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    old_digest = load_bundle(bundle_dir).digest
    config = f'policy_bundle = "{bundle_dir}"\npolicy_reload_s = 1\n' + gateway_config(
        fast_upstream.port, allow_plaintext=True, local=False)
    gw = start_gateway(workdir, config)
    try:
        key = gw.new_key("acme")
        identity = f"{gw.url}/.well-known/sealgate/identity"
        assert httpx.get(identity).json()["policy_digest"] == old_digest
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            body = {"model": "fast-echo", "messages": [{"role": "user", "content": "x"}]}
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    statuses.append(client.post(f"{gw.url}/v1/chat/completions", json=body,
                                                headers={"Authorization": f"Bearer {key}"}).status_code)

        worker = threading.Thread(target=load)
        worker.start()
        # A bundle that does not load is refused and logged, and polling goes on.
        broken = bundle_dir / "data" / "broken.yaml"
        broken.write_text("reviewed: 2025-01-01\n")
        deadline = time.monotonic() + 15
        while "policy_reload_refused" not in gw.output():
            assert time.monotonic() < deadline, "the broken bundle was not reported"
            time.sleep(0.2)
        assert httpx.get(identity).json()["policy_digest"] == old_digest
        # The dashboard shows the bundle in force, not the refused one on disk.
        assert _dashboard_current_policy(gw) == old_digest
        broken.unlink()
        contracts = bundle_dir / "data" / "contracts.yaml"
        contracts.write_text(contracts.read_text() + "\n# revision 2\n")
        new_digest = load_bundle(bundle_dir).digest
        assert new_digest != old_digest
        deadline = time.monotonic() + 15
        while httpx.get(identity).json()["policy_digest"] != new_digest:
            assert time.monotonic() < deadline, "the new bundle was not picked up"
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        worker.join()
        assert statuses and set(statuses) == {200}
    finally:
        gw.stop()


def _dashboard_current_policy(gw: Gateway) -> str:
    password = "correct horse battery staple"
    created = subprocess.run([sys.executable, "-m", "proxy.cli", "users", "create", "ops",
                              "--role", "admin", "--password-stdin"], cwd=ROOT, env=gw.env,
                             input=password + "\n", capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/dashboard/login").text)
        assert csrf is not None
        client.post("/dashboard/login", data={"csrf": csrf.group(1), "username": "ops",
                                              "password": password})
        page = client.get("/dashboard/policies")
    assert page.status_code == 200, page.text
    current = re.search(r'<code id="current">([^<]+)</code>', page.text)
    assert current is not None
    return current.group(1)

