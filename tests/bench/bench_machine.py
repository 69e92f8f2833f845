"""How this machine runs code right after it idled, next to the same code run back to back.

Every request path here starts after a wait on the network, so it runs on a CPU that was idle.
On a virtual machine that halts idle vCPUs, the first hundreds of microseconds after a wake can
run several times slower than the same code run hot, which is part of every round-trip number
in the other groups and none of the per-operation ones. The workload is one request's client
work: BHTTP encoding and OHTTP sealing with a sender setup made beforehand (no threads).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from proxy.ohttp import BHTTPRequest, GatewayKey, encapsulate_request, encode_request, prepare_sender

_FIELDS = ((b"authorization", b"Bearer sg-" + b"x" * 40), (b"content-type", b"application/json"),
           (b"date", b"Sun, 22 Nov 2026 10:00:00 GMT"))
_IDLE_S = 0.003


def _samples(n: int, idle: bool) -> list[float]:
    key = GatewayKey.generate(1)
    setups = [prepare_sender(key.config, chunked=False) for _ in range(n)]
    out = []
    for setup in setups:
        if idle:
            time.sleep(_IDLE_S)
        started = time.perf_counter()
        bhttp = encode_request(BHTTPRequest(b"POST", b"https", b"gateway.example", b"/v1/chat/completions",
                                            _FIELDS, b"x" * 300))
        encapsulate_request(key.config, bhttp, prepared=setup)
        out.append(time.perf_counter() - started)
    return out[n // 10:]  # the first ones warm caches up


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 300 if quick else 1500
    hot = statistics.median(_samples(n, idle=False)) * 1e6
    woken = statistics.median(_samples(n, idle=True)) * 1e6
    return [
        {"name": "encode and seal one request, back to back", "p50_us": round(hot, 1)},
        {"name": f"the same, right after {_IDLE_S * 1e3:.0f} ms idle", "p50_us": round(woken, 1)},
        {"name": "slowdown after idling (ratio)", "value": round(woken / hot, 2)},
    ]
