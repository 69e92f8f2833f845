"""One real gateway per test session: ``sealgate serve`` on loopback with the real SmolLM2 model,
a fast upstream (measurement tool) and an upstream that is down."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference import LlamaCppBackend, LlamaCppConfig
from tests.server import Gateway, Proc, free_port, start_fast_upstream, start_gateway

MODEL = "SmolLM2-135M-Instruct"

CONFIG = """
allow_plaintext = {allow_plaintext}
max_body_bytes = 65536

[backends.fast]
type = "openai"
url = "http://127.0.0.1:{fast}/v1"

[backends.down]
type = "openai"
url = "http://127.0.0.1:{closed}/v1"
timeout_s = 5.0

[models."fast-echo"]
backend = "fast"
retention_tier = "attested-zero"

[models."acme/fast-echo"]
backend = "fast"
retention_tier = "attested-zero"

[models."down-model"]
backend = "down"
retention_tier = "attested-zero"
"""

# The embedded model: loaded only by gateways whose tests use it.
LOCAL = """
[backends.local]
type = "llamacpp"
n_ctx = 2048
n_parallel = 2

[models."SmolLM2-135M-Instruct"]
backend = "local"
retention_tier = "attested-zero"
"""


def _embedded(slots: int) -> Iterator[LlamaCppBackend]:
    """The embedded llama.cpp backend with the real SmolLM2 model, in this process."""
    model = LlamaCppBackend("local", LlamaCppConfig(n_ctx=2048, n_parallel=slots))
    asyncio.run(model.start())
    yield model
    asyncio.run(model.close())


@pytest.fixture(scope="module")
def one_slot() -> Iterator[LlamaCppBackend]:
    yield from _embedded(1)


@pytest.fixture(scope="module")
def two_slots() -> Iterator[LlamaCppBackend]:
    yield from _embedded(2)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration")


@pytest.fixture(scope="session")
def fast_upstream(workdir: Path) -> Iterator[Proc]:
    proc = start_fast_upstream(workdir)
    yield proc
    proc.stop()


def gateway_config(fast_port: int, *, allow_plaintext: bool, local: bool = True) -> str:
    """The test gateway's TOML; ``local=False`` leaves out the embedded model (faster start)."""
    config = CONFIG.format(fast=fast_port, closed=free_port(),
                           allow_plaintext=str(allow_plaintext).lower())
    return config + LOCAL if local else config


@pytest.fixture(scope="session")
def gateway(workdir: Path, fast_upstream: Proc) -> Iterator[Gateway]:
    """The development-mode gateway (plaintext allowed, so plain clients work too)."""
    gw = start_gateway(workdir, gateway_config(fast_upstream.port, allow_plaintext=True))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def api_key(gateway: Gateway) -> str:
    return gateway.new_key("acme")


def predicate(envelope: str | bytes) -> dict[str, Any]:
    """The proof-of-secrecy predicate inside a record's DSSE envelope."""
    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return dict(payload["predicate"])


def request_records(gw: Gateway, key: str, request_id: str, final: str = "completion",
                    timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The predicates of one request's records by kind, once its ``final`` record (appended in
    the background) is there."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{gw.url}/v1/audit/requests/{request_id}",
                             headers={"Authorization": f"Bearer {key}"})
        found = {r["kind"]: predicate(r["envelope"]) for r in response.json().get("records", [])}
        if final in found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


_COUNTER = re.compile(r'sealgate_requests_total\{endpoint="([^"]*)",model="([^"]*)",'
                      r'channel="([^"]*)",status="([^"]*)"\} (\d+)')


def request_counts(gw: Gateway) -> dict[tuple[str, str, str, int], int]:
    """``sealgate_requests_total`` by (endpoint, model, channel, status), from ``/metrics``."""
    text = httpx.get(f"{gw.url}/metrics").text
    return {(e, m, c, int(s)): int(n) for e, m, c, s, n in _COUNTER.findall(text)}


def request_log(gw: Gateway, request_id: str) -> list[dict[str, Any]]:
    """The gateway's ``request`` log lines for one request id."""
    lines = (json.loads(line) for line in gw.output().splitlines() if request_id in line)
    return [line for line in lines if line.get("event") == "request"]
