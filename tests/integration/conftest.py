"""One real gateway per test session: ``sealgate serve`` on loopback with the real SmolLM2 model,
a fast upstream (measurement tool) and an upstream that is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
