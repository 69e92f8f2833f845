"""One real gateway whose ``vllm`` backend supervises a real vLLM (CPU build) child.

Runs only under ``make test-vllm``, which installs vLLM into its own virtualenv, makes the model
and sets ``SEALGATE_VLLM_PYTHON`` and ``SEALGATE_VLLM_MODEL``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need
from tests.server import Gateway, free_port, start_gateway

MODEL = "smollm2-vllm"
VLLM_PYTHON = os.environ.get("SEALGATE_VLLM_PYTHON", "")
VLLM_MODEL = os.environ.get("SEALGATE_VLLM_MODEL", "")
STARTUP_TIMEOUT_S = float(os.environ.get("SEALGATE_VLLM_STARTUP_S", "900"))

CONFIG = """
allow_plaintext = true

[backends.vllm]
type = "vllm"
model = "{model}"
python = "{python}"
port = {port}
served_model_name = "{name}"
extra_args = ["--max-model-len", "1024", "--dtype", "bfloat16", "--enforce-eager",
              "--enable-prefix-caching", "--enable-prompt-tokens-details"]
startup_timeout_s = {startup}
health_interval_s = 2.0
debug_log = "{debug_log}"
env = {{ VLLM_CPU_KVCACHE_SPACE = "1", VLLM_CACHE_ROOT = "{cache}", HOME = "{home}" }}

[models."{name}"]
backend = "vllm"
retention_tier = "attested-zero"
"""


@dataclass
class VLLMGateway:
    """The gateway, its vLLM child's port and the file that receives the child's output."""

    gateway: Gateway
    vllm_port: int
    debug_log: Path
    workdir: Path


@pytest.fixture(scope="session")
def vllm_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMGateway]:
    # `make test` never collects this folder (tests/conftest.py ignores it unless
    # SEALGATE_VLLM_PYTHON is set); run on purpose without both settings, it skips, or fails
    # under SEALGATE_REQUIRE_ALL=1 like any other missing component.
    need(bool(VLLM_PYTHON and VLLM_MODEL), "needs a vLLM interpreter and model: run `make test-vllm` "
                                           "(sets SEALGATE_VLLM_PYTHON and SEALGATE_VLLM_MODEL)")
    workdir = tmp_path_factory.mktemp("vllm")
    port = free_port()
    debug_log = workdir / "vllm-child.log"
    home = workdir / "home"
    home.mkdir()
    config = CONFIG.format(model=VLLM_MODEL, python=VLLM_PYTHON, port=port, name=MODEL,
                           startup=STARTUP_TIMEOUT_S, debug_log=debug_log,
                           cache=workdir / "vllm-cache", home=home)
    gw = start_gateway(workdir, config, timeout=STARTUP_TIMEOUT_S + 60)
    yield VLLMGateway(gw, port, debug_log, workdir)
    gw.stop()


@pytest.fixture(scope="session")
def api_key(vllm_gateway: VLLMGateway) -> str:
    return vllm_gateway.gateway.new_key("acme")
