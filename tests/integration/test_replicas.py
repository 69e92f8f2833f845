"""Several proxy replicas share one PostgreSQL: each keeps its own log id and checkpoint
series, both written concurrently, and both logs verify."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import httpx
import httpx2

from audit import Receipt
from proxy.client import SealedTransportError, verify_response_receipt
from tests.pg import PgCluster, postgresql  # noqa: F401  (session fixture)
from tests.server import Gateway, Proc, fast_config, run_cli, start_gateway

THREADS, PER_THREAD = 2, 60  # per replica


def _hammer(gw: Gateway, key: str, n: int, ok: list[int]) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            response = client.post(f"{gw.url}/v1/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {key}"})
            ok.append(response.status_code)


def _receipt_verifies_through_the_other_replica(first: Gateway, second: Gateway) -> None:
    """A receipt from one replica checks out against records and proofs another replica
    serves (behind a load balancer the client cannot choose)."""
    key = first.new_key("roaming")
    response = httpx.post(f"{first.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "fast", "messages": [{"role": "user", "content": "x"}]})
    identity = httpx.get(f"{first.url}/.well-known/sealgate/identity").json()
    audit_key = base64.b64decode(identity["audit_public_key"])
    logs = httpx.get(f"{second.url}/v1/audit/logs").json()
    receipt = Receipt.parse(response.headers["sealgate-receipt"])
    assert len(logs["logs"]) == 2 and logs["current"] != receipt.log_id
    deadline = time.monotonic() + 10
    with httpx2.Client(timeout=10) as client:
        while True:
            try:
                verified = verify_response_receipt(client, second.url, response.headers["sealgate-receipt"],
                                                   audit_key, api_key=key, allow_plaintext=True)
                break
            except SealedTransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    assert verified.statement["predicate"]["kind"] == "intent"


def test_two_replicas_one_postgres(workdir: Path, fast_upstream: Proc,
                                   postgresql: PgCluster) -> None:  # noqa: F811
    url = postgresql.new_database()
    replicas = [start_gateway(workdir, fast_config(
        fast_upstream.port, allow_plaintext=True, audit_url=url, database_url=url,
        log_origin=f"sealgate.test/replica-{n}", checkpoint_every_ms=100)) for n in (1, 2)]
    try:
        statuses: list[int] = []
        threads = [threading.Thread(target=_hammer, args=(gw, gw.new_key("acme"), PER_THREAD,
                                                          statuses))
                   for gw in replicas for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) == len(statuses) == 2 * THREADS * PER_THREAD
        notes = [httpx.get(f"{gw.url}/v1/audit/checkpoint").text for gw in replicas]
        assert notes[0].split("\n")[0] != notes[1].split("\n")[0]  # separate origins / logs
        _receipt_verifies_through_the_other_replica(*replicas)
    finally:
        for gw in replicas:
            gw.stop()
    result = run_cli(replicas[0].env, "audit", "verify", "--db", url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    # `audit verify --json` (proxy/cli/_audit.py): {"ok": true, "logs": [one object per log]}
    # on success; any discrepancy exits 1 with no JSON.
    assert reports["ok"] is True
    origins = sorted(r["origin"] for r in reports["logs"])
    assert origins == ["sealgate.test/replica-1", "sealgate.test/replica-2"]  # one log each
    logs = {r["origin"]: r for r in reports["logs"]}
    for report in logs.values():
        # Stopped cleanly: every record integrated and under the final checkpoint.
        assert report["records"] == report["integrated"] == report["size"], report
    # An intent and a completion record per request: THREADS * PER_THREAD hammered into each
    # replica, and the one roaming request sent to the first.
    assert logs["sealgate.test/replica-1"]["records"] == 2 * (THREADS * PER_THREAD + 1)
    assert logs["sealgate.test/replica-2"]["records"] == 2 * THREADS * PER_THREAD
