"""Sealed (OHTTP) versus plain through the same gateway, and both versus the backend directly.

Measurement setup as in ``bench_gateway``: the fast upstream (a measurement tool) answers
instantly; ``sealgate serve`` (policy and signed records on) proxies to it; this process is the
client, using the SDK's transport (``SealedTransport``) with the gateway's pinned key config.
Rows: sealed - plain round trip (non-streaming), sealed - direct (the whole added cost of
sealing, policy and the signed record), and time to first streamed token sealed vs plain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import msgspec

from proxy.client import SealedTransport, StaticKeySource
from tests.bench._stats import summary_ms
from tests.server import fast_gateway

BODY = {"model": "fast", "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 200}]}
STREAM = {**BODY, "max_tokens": 8, "stream": True}


def _round_trip(client: httpx2.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.post(url, content=msgspec.json.encode(BODY), headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


def _first_token(client: httpx2.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    with client.stream("POST", url, content=msgspec.json.encode(STREAM), headers=headers) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        for chunk in chunks:
            if b'"content"' in chunk:
                elapsed = time.perf_counter() - started
                break
        else:
            raise AssertionError("no content chunk")
        for _ in chunks:
            pass
    return elapsed


def _alternate(n: int, *calls: Callable[[], float]) -> list[list[float]]:
    samples: list[list[float]] = [[] for _ in calls]
    for i in range(n + min(50, n)):
        for j, call in enumerate(calls):
            value = call()
            if i >= min(50, n):  # the first rounds warm up connections and caches
                samples[j].append(value)
    return samples


def _rows(n: int, upstream_url: str, gw_url: str, key: str) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    configs = httpx2.get(f"{gw_url}/.well-known/ohttp-gateway").content
    sealed = httpx2.Client(transport=SealedTransport(
        gateway_url=f"{gw_url}/.well-known/ohttp-gateway", key_source=StaticKeySource(configs)),
        timeout=10)
    plain = httpx2.Client(timeout=10)
    chat = "/v1/chat/completions"
    with sealed, plain:
        direct, plain_rt, sealed_rt = _alternate(
            n, lambda: _round_trip(plain, f"{upstream_url}{chat}", {"Content-Type": "application/json"}),
            lambda: _round_trip(plain, f"{gw_url}{chat}", auth),
            lambda: _round_trip(sealed, f"{gw_url}{chat}", auth))
        ttft_plain, ttft_sealed = _alternate(
            max(n // 2, 50), lambda: _first_token(plain, f"{gw_url}{chat}", auth),
            lambda: _first_token(sealed, f"{gw_url}{chat}", auth))
    rows = []
    for name, a, b, target, limit in (
        ("sealed - plain round trip (through gateway)", sealed_rt, plain_rt, "p50 <= 0.5 ms", (0.5, None)),
        ("sealed + policy + signed record - backend direct", sealed_rt, direct,
         "p50 <= 1.5 ms, p99 <= 5 ms", (1.5, 5.0)),
        ("time to first token: sealed - plain", ttft_sealed, ttft_plain, "<= 2 ms", (2.0, None)),
    ):
        d50, d99 = summary_ms([x - y for x, y in zip(a, b, strict=True)])
        ok = d50 <= limit[0] and (limit[1] is None or d99 <= limit[1])
        rows.append({"name": name, "p50_ms": d50, "p99_ms": d99, "target": target, "ok": ok})
    for name, samples in (("plain through gateway", plain_rt), ("sealed through gateway", sealed_rt),
                          ("backend direct", direct), ("TTFT plain", ttft_plain),
                          ("TTFT sealed", ttft_sealed)):
        p50, p99 = summary_ms(samples)
        rows.append({"name": name, "p50_ms": p50, "p99_ms": p99, "n": len(samples)})
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 150 if quick else 600
    with fast_gateway(allow_plaintext=True, log_level="warning") as (upstream, gateway, key):
        return _rows(n, upstream.url, gateway.url, key)
