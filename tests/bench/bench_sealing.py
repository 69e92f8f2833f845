"""Sealing costs in memory: per-chunk sealing and a full OHTTP request/response round trip.

``run(quick)`` returns one row per measurement with p50/p99 in microseconds and its target.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from proxy.ohttp import (
    BHTTPRequest,
    BHTTPResponse,
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ChunkedResponseSealer,
    GatewayKey,
    decapsulate_request,
    decode_request,
    decode_response,
    encapsulate_request,
    encode_request,
    encode_response,
)

__all__ = ["run"]

CHUNK_TARGET = "<= 50 us per sealed chunk (DESIGN budget)"
ROUND_TRIP_TARGET = "part of the <= 1.5 ms p50 sealed-path budget"


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    samples = sorted(samples_ns)
    p50 = statistics.median(samples) / 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000
    return round(p50, 2), round(p99, 2)


def _measure(name: str, target: str, runs: int, op: Callable[[], Any]) -> dict[str, Any]:
    for _ in range(min(50, runs)):
        op()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        op()
        samples.append(time.perf_counter_ns() - start)
    p50, p99 = _percentiles(samples)
    return {"name": name, "p50_us": p50, "p99_us": p99, "target": target, "runs": runs}


def _chunked_pair(key: GatewayKey) -> tuple[ChunkedResponseSealer, ChunkedResponseOpener]:
    sealer = ChunkedRequestSealer(key.config)
    opener = ChunkedRequestOpener({key.config.key_id: key}.get)
    opener.feed(sealer.seal(b"request", final=True))
    opener.close()
    assert opener.context is not None
    response_sealer = ChunkedResponseSealer(opener.context)
    response_opener = ChunkedResponseOpener(sealer.context)
    response_opener.feed(response_sealer.response_nonce)
    return response_sealer, response_opener


def _round_trip(key: GatewayKey, request: bytes, response: bytes) -> Callable[[], None]:
    keys = {key.config.key_id: key}.get

    def op() -> None:
        sealed, client = encapsulate_request(key.config, request)
        _, server = decapsulate_request(sealed, keys)
        client.open_response(server.seal_response(response))

    return op


def _gateway_side(key: GatewayKey, request: bytes, response: bytes, n: int) -> Callable[[], None]:
    keys = {key.config.key_id: key}.get
    sealed = iter([encapsulate_request(key.config, request)[0] for _ in range(n + 50)])

    def op() -> None:
        _, server = decapsulate_request(next(sealed), keys)
        server.seal_response(response)

    return op


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; ``quick`` runs fewer iterations (for smoke tests)."""
    n = 200 if quick else 5000
    key = GatewayKey.generate(1)
    token = b'data: {"choices":[{"delta":{"content":" token"}}]}\n\n'  # one SSE event, ~50 B
    sealer, opener = _chunked_pair(key)
    sealed_tokens = [sealer.seal(token) for _ in range(n + 50)]
    feed = iter(sealed_tokens)
    inner = BHTTPRequest(
        b"POST",
        b"https",
        b"sealgate",
        b"/v1/chat/completions",
        ((b"content-type", b"application/json"),),
        os.urandom(1024),
    )
    bhttp = encode_request(inner)
    answer = encode_response(BHTTPResponse(200, ((b"content-type", b"application/json"),), os.urandom(1024)))
    rows = [
        _measure("seal response chunk (SSE event, AES-128-GCM)", CHUNK_TARGET, n, lambda: sealer.seal(token)),
        _measure("open response chunk (SSE event)", CHUNK_TARGET, n, lambda: opener.feed(next(feed))),
        _measure(
            "seal+open request and response (1 KiB each, in memory)",
            ROUND_TRIP_TARGET,
            n // 5,
            _round_trip(key, bhttp, answer),
        ),
        _measure(
            "gateway side: decapsulate + seal response (1 KiB each)",
            ROUND_TRIP_TARGET,
            n // 5,
            _gateway_side(key, bhttp, answer, n // 5),
        ),
        _measure(
            "BHTTP encode+decode request (1 KiB)",
            ROUND_TRIP_TARGET,
            n,
            lambda: decode_request(encode_request(inner)),
        ),
        _measure("BHTTP decode response (1 KiB)", ROUND_TRIP_TARGET, n, lambda: decode_response(answer)),
    ]
    return rows


if __name__ == "__main__":
    for row in run():
        print(
            f"{row['name']:<60} p50 {row['p50_us']:>9.2f} us  p99 {row['p99_us']:>9.2f} us  ({row['target']})"
        )
