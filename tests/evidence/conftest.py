"""A real gateway (fast upstream backend only) that served allowed and denied requests of two
tenants, for evidence export and the dashboard."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from proxy.tenants import TenantStore
from tests.server import Gateway, Proc, start_fast_upstream, start_gateway

CONFIG = """
allow_plaintext = true
checkpoint_every_ms = 100

[backends.fast]
type = "openai"
url = "http://127.0.0.1:{fast}/v1"

[models."fast-echo"]
backend = "fast"
retention_tier = "attested-zero"

[models."fast-contract"]
backend = "fast"
retention_tier = "contractual-zero"
"""


@dataclass
class Traffic:
    gateway: Gateway
    keys: dict[str, str]
    allowed: int
    denied: int


def _chat(gw: Gateway, key: str, **extra: object) -> httpx.Response:
    body = {"model": "fast-echo", "messages": [{"role": "user", "content": "hello"}], **extra}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def _keys(gw: Gateway, names: tuple[str, ...]) -> dict[str, str]:
    """Tenants and keys written straight into the gateway's tenant database (the CLI path is
    tested elsewhere; this keeps the fixture fast)."""
    store = TenantStore(f"sqlite:///{gw.data_dir / 'sealgate.db'}")
    try:
        for name in names:
            store.create_tenant(name, exist_ok=True)
        return {name: store.create_key(name)[1] for name in names}
    finally:
        store.close()


def _checkpointed(gw: Gateway, sent: list[tuple[str, httpx.Response]], timeout: float = 60) -> None:
    """Wait until every record of the ``sent`` (key, response) pairs is written (a completion
    record is appended after its answer) and in a published checkpoint."""
    deadline = time.monotonic() + timeout
    leaves = [0]
    for key, response in sent:
        final = {200: "completion", 403: "denial"}.get(response.status_code)
        if final is None:  # refused as not served here, after the policy allowed it: no record
            continue
        while True:
            found = httpx.get(f"{gw.url}/v1/audit/requests/{response.headers['x-request-id']}",
                              headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
            records = found.get("records", [])
            if any(r["kind"] == final for r in records):
                break
            assert time.monotonic() < deadline, f"no {final} record of a request"
            time.sleep(0.05)
        leaves += [r["leaf"] for r in records]
    while int(httpx.get(f"{gw.url}/v1/audit/checkpoint", timeout=30).text.split("\n")[1]) <= max(leaves):
        assert time.monotonic() < deadline, "no checkpoint covers every record"
        time.sleep(0.05)


def drive(gw: Gateway) -> Traffic:
    keys = _keys(gw, ("acme", "globex"))
    allowed = denied = 0
    sent: list[tuple[str, httpx.Response]] = []
    for name, key in keys.items():
        for _ in range(3 if name == "acme" else 2):
            sent.append((key, _chat(gw, key)))
            assert sent[-1][1].status_code == 200
            allowed += 1
        sent.append((key, _chat(gw, key, store=True)))
        assert sent[-1][1].status_code == 403
        response = httpx.post(f"{gw.url}/v1/fine_tuning/jobs", timeout=30,
                              json={"model": "fast-echo", "training_file": "file-x"},
                              headers={"Authorization": f"Bearer {key}"})
        assert response.status_code in (403, 404)
        sent.append((key, response))
        denied += 2
    _checkpointed(gw, sent)
    return Traffic(gw, keys, allowed, denied)


@pytest.fixture(scope="session")
def evidence_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evidence")


@pytest.fixture(scope="session")
def traffic(evidence_workdir: Path) -> Iterator[Traffic]:
    upstream: Proc = start_fast_upstream(evidence_workdir)
    gw = start_gateway(evidence_workdir, CONFIG.format(fast=upstream.port))
    try:
        yield drive(gw)
    finally:
        gw.stop()
        upstream.stop()


def window() -> tuple[str, str]:
    now = datetime.now(UTC)
    return ((now - timedelta(days=1)).date().isoformat(), now.date().isoformat())


def export(traffic: Traffic, out: Path, *extra: str) -> bytes:
    start, end = window()
    result = traffic.gateway.cli("evidence", "export", "--from", start, "--to", end,
                                 "--server", traffic.gateway.url, "-o", str(out), *extra)
    assert result.returncode == 0, result.stderr
    assert "proving records" in result.stderr  # the progress bar
    return out.read_bytes()


@pytest.fixture(scope="session")
def bundle(traffic: Traffic, evidence_workdir: Path) -> bytes:
    """A bundle of every record the gateway wrote, at ``evidence_workdir/bundle.zip``."""
    return export(traffic, evidence_workdir / "bundle.zip")


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def export_entry(name: str, method: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    """A zip entry with the header fields an export writes (the verifier requires them)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.create_system, info.external_attr = method, 3, 0o600 << 16
    return info


def rezip(files: dict[str, bytes]) -> bytes:
    """``files`` zipped as an export zips them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(export_entry(name), data)
    return buffer.getvalue()
