"""A completions batch refused at a later prompt (it does not fit the context with its output)
after earlier prompts were generated is charged to its tenant: the refusal cannot be used to
generate past the tenant's token budget."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server import start_gateway

MODEL = "SmolLM2-135M-Instruct"
CONFIG = """
allow_plaintext = true
tenant_tokens_per_minute = 200

[backends.local]
type = "llamacpp"
n_ctx = 2048
n_parallel = 1

[models."SmolLM2-135M-Instruct"]
backend = "local"
retention_tier = "attested-zero"
"""


def test_a_batch_refused_after_generating_is_charged(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, CONFIG)
    try:
        key = gateway.new_key("budget")

        def post(body: dict[str, object]) -> httpx.Response:
            return httpx.post(f"{gateway.url}/v1/completions", json={"model": MODEL, **body},
                              timeout=300, headers={"Authorization": f"Bearer {key}"})

        refused = post({"prompt": ["1, 2, 3, 4, 5,", "word " * 1600], "max_tokens": 500,
                        "temperature": 0})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "context_length_exceeded"
        after = post({"prompt": "1, 2,", "max_tokens": 2})
        assert after.status_code == 429, after.text
        assert after.json()["error"]["code"] == "token_rate_limit_exceeded"
    finally:
        gateway.stop()
