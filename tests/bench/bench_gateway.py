"""Added latency of the gateway over calling the same backend directly (plain path).

Measurement setup: the fast upstream (a measurement tool answering instantly) runs as one
process, ``sealgate serve`` proxies to it as another, and this process is the client. Direct and
proxied requests alternate, on keep-alive connections, so both see the same machine load.
A third process, the bare forwarder (a measurement tool: raw ASGI on the same server, one pooled
aiohttp session, nothing else), is measured in the same rotation: its added latency is the floor
of any Python proxy on this stack and machine, and the gateway's cost above it is what its own
work (authentication, validation, policy, the durable signed record) adds.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.bench._stats import summary_ms
from tests.server import Gateway, Proc, fast_gateway, start_bare_forwarder

BODY = {"model": "fast", "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 200}]}


def _timed(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.post(url, json=BODY, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


def measure(upstream: Proc, gateway: Gateway, key: str, n: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"direct": [], "floor": [], "proxied": []}
    auth = {"Authorization": f"Bearer {key}"}
    forwarder = start_bare_forwarder(gateway.log.parent, upstream)
    chat = "/v1/chat/completions"
    targets = {"direct": (f"{upstream.url}{chat}", {}), "floor": (f"{forwarder.url}{chat}", {}),
               "proxied": (f"{gateway.url}{chat}", auth)}
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(n + min(50, n)):
                for name, (url, headers) in targets.items():
                    elapsed = _timed(client, url, headers)
                    if i >= min(50, n):  # the first rounds warm up connections and caches
                        samples[name].append(elapsed)
    finally:
        forwarder.stop()
    return samples


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 200 if quick else 1000
    with fast_gateway(allow_plaintext=True, log_level="warning") as (upstream, gateway, key):
        samples = measure(upstream, gateway, key, n)
    d50, d99 = summary_ms(samples["direct"])
    p50, p99 = summary_ms(samples["proxied"])
    added = [p - d for p, d in zip(samples["proxied"], samples["direct"], strict=True)]
    floor = [f - d for f, d in zip(samples["floor"], samples["direct"], strict=True)]
    above = [p - f for p, f in zip(samples["proxied"], samples["floor"], strict=True)]
    a50, a99 = summary_ms(added)
    f50, f99 = summary_ms(floor)
    b50, b99 = summary_ms(above)
    return [
        {"name": "backend direct (chat, non-streaming)", "p50_ms": d50, "p99_ms": d99, "n": n},
        {"name": "through gateway, plain path", "p50_ms": p50, "p99_ms": p99, "n": n},
        {"name": "added latency, plain path", "p50_ms": a50, "p99_ms": a99,
         "target": "p50 <= 1 ms, p99 <= 3 ms", "ok": a50 <= 1.0 and a99 <= 3.0},
        {"name": "floor: bare forwarder added (measurement tool)", "p50_ms": f50, "p99_ms": f99},
        {"name": "gateway above the floor", "p50_ms": b50, "p99_ms": b99},
    ]
