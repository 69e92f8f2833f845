"""Audit log budgets: batched appends on SQLite, inclusion proofs at 1M leaves, flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, LogStore, Record, RecordBuilder, SignedCheckpoint, commit
from audit._merkle import CompactRange
from audit._note import key_id, vkey_for

ORIGIN = "bench.sealgate.test/audit"


def _record(i: int) -> Record:
    return (
        RecordBuilder("completion")
        .set(tenant="tenant-bench", request_id=f"req-{i}", endpoint="/v1/chat/completions",
             decision="allow", channel="sealed", model="smollm2-135m", backend="llamacpp",
             retention_tier="none", rule_ids=["no_retention", "no_training"],
             policy_bundle_digest="sha256:" + "ab" * 32, evidence_digest="sha256:" + "cd" * 32,
             platform="simulated", prompt_tokens=42, completion_tokens=17, latency_ms=12.5,
             stream=True, status=200, request_commitment=commit(b"k" * 32, b"q%d" % i),
             response_commitment=commit(b"k" * 32, b"a%d" % i))
        .build()
    )  # fmt: skip


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _appends(folder: Path, total: int, workers: int, sync: str = "full"
                   ) -> tuple[float, float, float]:
    url = f"sqlite:///{folder / f'appends-{sync}.db'}?synchronous={sync}"
    log = await AuditLog.open(url, Ed25519PrivateKey.generate(), ORIGIN)
    records = [_record(i) for i in range(total)]

    async def appender(chunk: list[Record]) -> None:
        for record in chunk:
            await log.append(record)

    started = time.perf_counter()
    await asyncio.gather(*[appender(records[w::workers]) for w in range(workers)])
    rate = total / (time.perf_counter() - started)
    del records
    rss = []
    for segment in range(3):  # equal segments after warm-up: growth must not continue
        base = total * (segment + 1)
        for start in range(0, total, 1000):
            await asyncio.gather(*[log.append(_record(base + start + j)) for j in range(1000)])
        await log.publish()
        rss.append(_rss_mb())
    await log.close()
    return rate, rss[1], rss[2]


async def _proofs(folder: Path, leaves: int, samples: int) -> tuple[list[float], float]:
    key = Ed25519PrivateKey.generate()
    log_id = key_id(ORIGIN, key.public_key()).hex()
    url = f"sqlite:///{folder / 'proofs.db'}"
    build = time.perf_counter()
    rng, nodes = CompactRange(), []
    for i in range(leaves):  # bulk-load a tree of synthetic leaf hashes
        nodes.extend(rng.append(hashlib.sha256(i.to_bytes(8, "big")).digest()))
    store = LogStore.open(url)
    store.register_log(log_id, ORIGIN, vkey_for(ORIGIN, key.public_key()))
    for start in range(0, len(nodes), 200_000):
        store.bulk_nodes(log_id, nodes[start : start + 200_000], leaves)
    # The writer continues a stored tree only under a checkpoint its key signed over it.
    signed = SignedCheckpoint.sign(ORIGIN, leaves, rng.root(), key)
    store.integrate(log_id, [], leaves, (signed.root_hash, signed.note, time.time_ns() // 1000))
    store.close()
    del nodes
    build_s = time.perf_counter() - build
    log = await AuditLog.open(url, key, ORIGIN)
    pick = random.Random(7)
    times = []
    for _ in range(samples):
        index = pick.randrange(leaves)
        started = time.perf_counter()
        await log.inclusion_proof(index, leaves)
        times.append((time.perf_counter() - started) * 1000)
    await log.close()
    return times, build_s


def run(quick: bool = False) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="sealgate-bench-audit-"))
    try:
        total = 4000 if quick else 20_000
        rate, before, after = asyncio.run(_appends(folder, total, workers=100))
        normal, _, _ = asyncio.run(_appends(folder, total, workers=100, sync="normal"))
        leaves = 1 << (17 if quick else 20)
        times, build_s = asyncio.run(_proofs(folder, leaves, 200 if quick else 1000))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    return [
        {"name": f"append, 100 concurrent appenders, SQLite FULL ({total} records)",
         "per_s": rate, "target": ">= 3000/s", "ok": rate >= 3000},
        {"name": f"append, 100 concurrent appenders, SQLite NORMAL, the default ({total} records)",
         "per_s": normal, "target": ">= 3000/s", "ok": normal >= 3000},
        {"name": f"inclusion proof via AuditLog at {leaves} leaves (built in {build_s:.0f}s)",
         "p50_ms": p50, "p99_ms": p99, "target": "<= 1 ms", "ok": p50 <= 1.0},
        {"name": f"RSS growth over {total} more records after warm-up "
                 f"(MB, {before:.0f} -> {after:.0f})",
         "value": round(after - before, 1), "target": "flat (< 4 MB)", "ok": after - before < 4},
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(quick="--quick" in os.sys.argv):  # type: ignore[attr-defined]
        print(row)
