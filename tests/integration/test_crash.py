"""Crash safety: ``kill -9`` of the server under load, restart, and the log still verifies;
every request a client saw succeed has its record; the new checkpoint extends the last one
published before the crash."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.server import Proc, fast_config, run_cli, start_gateway


def _load(url: str, key: str, receipts: list[str], stop: threading.Event) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            try:
                response = client.post(f"{url}/v1/chat/completions", json=body,
                                        headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                receipts.append(response.headers["sealgate-receipt"])


def test_kill_9_under_load(workdir: Path, fast_upstream: Proc) -> None:
    config = fast_config(fast_upstream.port, allow_plaintext=True, checkpoint_every_ms=100,
                         checkpoint_every_n=50)
    gw = start_gateway(workdir, config)
    key = gw.new_key("crash-co")
    receipts: list[str] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(gw.url, key, receipts, stop)) for _ in range(4)]
    for worker in workers:
        worker.start()
    last_note = ""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        note = httpx.get(f"{gw.url}/v1/audit/checkpoint").text
        if int(note.split("\n")[1]) > 0:
            last_note = note
        time.sleep(0.1)
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait()
    stop.set()
    for worker in workers:
        worker.join()
    assert len(receipts) > 20 and last_note

    restarted = start_gateway(workdir, config, data_dir=gw.data_dir)
    try:
        saved = workdir / "last-checkpoint.txt"
        saved.write_text(last_note)
        result = run_cli(restarted.env, "audit", "verify", "--from-checkpoint", str(saved), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        reports = json.loads(result.stdout)
        # `audit verify --json` (proxy/cli/_audit.py): {"ok": true, "logs": [...]} on success.
        assert reports["ok"] is True and len(reports["logs"]) == 1
        (log,) = reports["logs"]
        assert log["origin"] == last_note.split("\n")[0]  # the log that signed the kept note
        # The restart integrated every record the crash left committed, and published a
        # checkpoint over all of them (the extension of the kept note is what exit 0 means).
        assert log["records"] == log["integrated"] == log["size"], log
        for header in receipts:
            record_id = header.split(";")[0].removeprefix("id=")
            response = httpx.get(f"{restarted.url}/v1/audit/records/{record_id}",
                                 headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, record_id
    finally:
        restarted.stop()
