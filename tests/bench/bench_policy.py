"""Policy decision latency: ``run(quick) -> rows`` (DESIGN.md budget: p50 <= 0.3 ms, p99 <= 1 ms).

Rows: the embedded engine end to end through ``decide`` (worker thread + timeout), the same
evaluation on the calling thread, its two halves (input conversion, compiled query), and the
exact-cache hit path. Inputs vary per decision (tenant, endpoint, limits, flags) so that the
uncached rows never hit the cache.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import regopy
import uvloop

from policy import PolicyInput, RegopyEngine, RequestParams, load_bundle
from policy._engine import ENTRYPOINT
from policy._regopy import compile_bundle
from policy._regopy_capi import make_input

TARGET = "p50 <= 0.3 ms, p99 <= 1 ms"
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/fine_tuning/jobs")
TENANTS = ("acme-health", "globex-research", "other")


def _inputs(n: int) -> list[PolicyInput]:
    return [
        PolicyInput(
            channel="sealed" if i % 7 else "plaintext",
            tenant_id=f"t{i}",
            tenant_name=TENANTS[i % 3],
            method="POST",
            path=PATHS[i % 4],
            model="llama-3.1-8b-instruct",
            request=RequestParams(stream=bool(i % 2), max_tokens=64 + i, metadata_keys=("a",)),
            backend_name="vllm",
            retention_tier="attested-zero",
            enclave_platform="sev-snp",
            enclave_measurement="ab" * 48,
            enclave_simulated=False,
            enclave_debug=False,
            mode="production",
            region="eu-west-1",
        )
        for i in range(n)
    ]


def _row(name: str, samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "name": name,
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1e3, 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 4),
        "target": TARGET,
    }


def _time_each(fn: Callable[[Any], Any], items: list[Any]) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - start)
    return out


async def _time_async(engine: RegopyEngine, items: list[PolicyInput]) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        await engine.decide(item)
        out.append(time.perf_counter() - start)
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 300 if quick else 3000
    bundle = load_bundle()
    inputs = _inputs(n)
    docs = [i.to_dict() for i in inputs]
    engine = RegopyEngine(bundle, timeout_s=1.0, cache_size=0)
    # On the event loop the gateway runs on: uvicorn picks uvloop when it is installed.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        timed = runner.run(_time_async(engine, inputs))
    rows = [_row("policy decision (regopy, in-process, async decide)", timed)]
    rows.append(
        _row("policy decision (regopy, in-process, calling thread)", _time_each(engine.decide_sync, inputs))
    )
    asyncio.run(engine.aclose())
    program, interp = compile_bundle(bundle), regopy.Interpreter()
    rows.append(_row("policy input conversion (make_input, in use)", _time_each(make_input, docs)))
    rows.append(_row("policy input conversion (regopy.Input, for reference)",
                     _time_each(regopy.Input, docs)))

    queried = []
    for doc in docs:  # each decision's own input, set outside the timed call
        interp.set_input(make_input(doc))
        start = time.perf_counter()
        interp.query_bundle_entrypoint(program, ENTRYPOINT)
        queried.append(time.perf_counter() - start)
    rows.append(_row("policy compiled query only (regopy)", queried))
    cached = RegopyEngine(bundle, timeout_s=1.0, cache_size=64)
    cached.decide_sync(inputs[0])
    rows.append(
        _row("policy decision (regopy, exact-cache hit)", _time_each(cached.decide_sync, [inputs[0]] * n))
    )
    asyncio.run(cached.aclose())
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
