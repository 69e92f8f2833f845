"""The gateway over an audit store that goes away (fault injection on a real server): nothing is
forwarded without a durable intent record, readiness says why, and the log is never started
over under the same key."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.server import fast_config, start_fast_upstream, start_gateway


def _signed_size(url: str) -> int:
    """The size in the latest checkpoint (the second line of the signed note)."""
    return int(httpx.get(f"{url}/v1/audit/checkpoint", timeout=30).text.split("\n")[1])


BODY = {"model": "fast", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}


def test_a_removed_audit_database_stops_forwarding_and_is_not_started_over(tmp_path: Path) -> None:
    upstream = start_fast_upstream(tmp_path)
    config = fast_config(upstream.port, allow_plaintext=True)
    gateway = start_gateway(tmp_path, config)
    try:
        key = gateway.new_key("acme")
        auth = {"Authorization": f"Bearer {key}"}
        chat = f"{gateway.url}/v1/chat/completions"
        assert httpx.post(chat, json=BODY, headers=auth, timeout=30).status_code == 200
        ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["audit_log"] is True
        deadline = time.monotonic() + 30
        while _signed_size(gateway.url) < 2:  # the intent and completion records, signed
            assert time.monotonic() < deadline, "no checkpoint covers the request's records"
            time.sleep(0.1)
        forwarded = httpx.get(f"{upstream.url}/stats").json()

        for suffix in ("", "-wal", "-shm"):
            (gateway.data_dir / f"audit.db{suffix}").unlink(missing_ok=True)
        refused = httpx.post(chat, json=BODY, headers=auth, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "audit_unavailable"
        assert httpx.get(f"{upstream.url}/stats").json() == forwarded  # nothing forwarded
        ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["audit_log"] is False
        assert "database_file_replaced" in gateway.output()
    finally:
        gateway.stop()
    assert not (gateway.data_dir / "audit.db").exists()  # no new database in its place
    witness = json.loads((gateway.data_dir / "keys" / "log-signed-checkpoints.json").read_text())
    assert [entry["size"] for entry in witness.values()] == [2]  # the intent and its completion

    # Restarted on the same key, a new empty store would start the log over at size 0.
    with pytest.raises(RuntimeError) as failed:
        start_gateway(tmp_path, config, data_dir=gateway.data_dir, timeout=60)
    assert "store_behind_witness" in str(failed.value)
    upstream.stop()
