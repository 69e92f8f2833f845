"""Several proxy replicas share one PostgreSQL: each keeps its own log id and checkpoint
series, both written concurrently, and both logs verify."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from tests.pg import PgCluster, postgresql  # noqa: F401  (session fixture)
from tests.server import Gateway, Proc, fast_config, run_cli, start_gateway


def _hammer(gw: Gateway, key: str, n: int, ok: list[int]) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            response = client.post(f"{gw.url}/v1/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {key}"})
            ok.append(response.status_code)


def test_two_replicas_one_postgres(workdir: Path, fast_upstream: Proc,
                                   postgresql: PgCluster) -> None:  # noqa: F811
    url = postgresql.new_database()
    replicas = [start_gateway(workdir, fast_config(
        fast_upstream.port, allow_plaintext=True, audit_url=url,
        log_origin=f"sealgate.test/replica-{n}", checkpoint_every_ms=100)) for n in (1, 2)]
    try:
        statuses: list[int] = []
        threads = [threading.Thread(target=_hammer, args=(gw, gw.new_key("acme"), 60, statuses))
                   for gw in replicas for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) == 240
        notes = [httpx.get(f"{gw.url}/v1/audit/checkpoint").text for gw in replicas]
        assert notes[0].split("\n")[0] != notes[1].split("\n")[0]  # separate origins / logs
    finally:
        for gw in replicas:
            gw.stop()
    result = run_cli(replicas[0].env, "audit", "verify", "--db", url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    logs = reports if isinstance(reports, list) else reports.get("logs", [])
    assert len(logs) == 2
    assert all(r.get("ok", True) for r in logs)
    assert sum(int(r.get("records", r.get("size", 0))) for r in logs) >= 480  # intent + completion
