"""Added latency of the gateway over calling the same backend directly (plain path).

Measurement setup: the fast upstream (a measurement tool answering instantly) runs as one
process, ``sealgate serve`` proxies to it as another, and this process is the client. Direct and
proxied requests alternate, on keep-alive connections, so both see the same machine load.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.bench._stats import summary_ms
from tests.server import Gateway, Proc, fast_gateway

BODY = {"model": "fast", "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 200}]}


def _timed(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.post(url, json=BODY, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


def measure(upstream: Proc, gateway: Gateway, key: str, n: int) -> dict[str, list[float]]:
    direct, proxied = [], []
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=10) as client:
        for _ in range(min(50, n)):  # warm-up
            _timed(client, f"{upstream.url}/v1/chat/completions", {})
            _timed(client, f"{gateway.url}/v1/chat/completions", auth)
        for _ in range(n):
            direct.append(_timed(client, f"{upstream.url}/v1/chat/completions", {}))
            proxied.append(_timed(client, f"{gateway.url}/v1/chat/completions", auth))
    return {"direct": direct, "proxied": proxied}


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 200 if quick else 1000
    with fast_gateway(allow_plaintext=True, log_level="warning") as (upstream, gateway, key):
        samples = measure(upstream, gateway, key, n)
    d50, d99 = summary_ms(samples["direct"])
    p50, p99 = summary_ms(samples["proxied"])
    added = [p - d for p, d in zip(samples["proxied"], samples["direct"], strict=True)]
    a50, a99 = summary_ms(added)
    return [
        {"name": "backend direct (chat, non-streaming)", "p50_ms": d50, "p99_ms": d99, "n": n},
        {"name": "through gateway, plain path", "p50_ms": p50, "p99_ms": p99, "n": n},
        {"name": "added latency, plain path", "p50_ms": a50, "p99_ms": a99,
         "target": "p50 <= 1 ms, p99 <= 3 ms", "ok": a50 <= 1.0 and a99 <= 3.0},
    ]
