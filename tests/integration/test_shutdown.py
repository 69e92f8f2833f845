"""Shutdown drain (docs/operations.md "Upgrading", docs/threat-model.md): SIGTERM while
requests are in flight; the gateway finishes them (uvicorn's graceful shutdown, 10 s: the
streams that outlast it are cut off then), drains their completion records and publishes a
final checkpoint over every record before it exits.

The cut-off streams end inside the graceful shutdown itself, so their completion records are
still being written when the gateway's own shutdown begins: the case the drain is for."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import predicate, request_records
from tests.server import Gateway, Proc, fast_config, start_gateway

WHOLE = 4  # whole answers held by the fast upstream (presence_penalty: seconds)
STREAMS = 4  # streams of many tokens, 20 ms apart (temperature 2: 20 ms a token)
LEGACY = 2  # legacy completions streams, as slow
LONG = 2  # streams longer than uvicorn's graceful shutdown (10 s): cut off, then recorded
PREFILL = 1  # a stream still waiting for its first chunk when the graceful shutdown runs out
CUT = "\n<cut off>"


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    chat = {"model": "fast", "messages": [{"role": "user", "content": "hello"}]}
    whole = [("/v1/chat/completions", {**chat, "max_tokens": 4, "presence_penalty": 2.0})
             for _ in range(WHOLE)]
    streams = [("/v1/chat/completions", {**chat, "max_tokens": 100, "temperature": 2.0,
                                         "stream": True}) for _ in range(STREAMS)]
    legacy = [("/v1/completions", {"model": "fast", "prompt": "hello", "max_tokens": 100,
                                   "temperature": 2.0, "stream": True}) for _ in range(LEGACY)]
    long = [("/v1/chat/completions", {**chat, "max_tokens": 2000, "temperature": 2.0,
                                      "stream": True}) for _ in range(LONG)]
    prefill = [("/v1/chat/completions", {**chat, "max_tokens": 4, "stream": True,
                                         "seed": 30_000}) for _ in range(PREFILL)]  # 30 s
    return whole + streams + legacy + long + prefill


def _call(url: str, key: str, path: str, body: dict[str, Any],
          answers: list[tuple[str, int, str]], failures: list[str]) -> None:
    """One request; its answer (request id, status, body text as far as it came) once the
    gateway ended it. A stream the gateway cut off mid-way counts as an answer with
    ``CUT`` appended: it started (headers and chunks) before the connection was closed."""
    try:
        with httpx.Client(timeout=40) as client, client.stream(
                "POST", f"{url}{path}", json=body,
                headers={"Authorization": f"Bearer {key}"}) as response:
            text = ""
            try:
                for chunk in response.iter_text():
                    text += chunk
            except httpx.RemoteProtocolError:
                text += CUT
            answers.append((response.headers.get("x-request-id", ""), response.status_code, text))
    except httpx.HTTPError as exc:
        failures.append(f"{path} stream={body.get('stream', False)}: {type(exc).__name__}")


def _intents(data_dir: Path) -> int:
    """Intent records committed so far (read-only, beside the running gateway)."""
    db = sqlite3.connect(f"file:{data_dir / 'audit.db'}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM audit_records WHERE kind = 'intent'")
                   .fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        db.close()


def _wait_for(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _shutdown_completions(data_dir: Path) -> int:
    """Completion records saying the gateway cut their request off."""
    db = sqlite3.connect(f"file:{data_dir / 'audit.db'}?mode=ro", uri=True)
    try:
        envelopes = [row[0] for row in db.execute(
            "SELECT envelope FROM audit_records WHERE kind = 'completion'")]
    finally:
        db.close()
    return sum(predicate(envelope).get("abort_reason") == "gateway_shutdown"
               for envelope in envelopes)


def _kinds_in_store(data_dir: Path, request_id: str) -> list[str]:
    db = sqlite3.connect(f"file:{data_dir / 'audit.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT kind FROM audit_records WHERE request_id = ?", (request_id,))
        return sorted(kind for (kind,) in rows)
    finally:
        db.close()


def test_sigterm_drains_completions_and_publishes_final_checkpoint(
        workdir: Path, fast_upstream: Proc) -> None:
    # A checkpoint interval far longer than the test: the only checkpoint that can cover the
    # last records is the one published at shutdown.
    config = fast_config(fast_upstream.port, allow_plaintext=True, checkpoint_every_ms=600_000)
    gw: Gateway = start_gateway(workdir, config)
    key = gw.new_key("drain-co")
    started = httpx.get(f"{fast_upstream.url}/stats").json()["streams_started"]
    bodies = _bodies()
    answers: list[tuple[str, int, str]] = []
    failures: list[str] = []
    threads = [threading.Thread(target=_call, args=(gw.url, key, path, body, answers, failures))
               for path, body in bodies]
    try:
        for thread in threads:
            thread.start()
        # Every request admitted (its intent durable) and every stream under way upstream.
        _wait_for("intent records", lambda: _intents(gw.data_dir) >= len(bodies))
        _wait_for("streams upstream", lambda: httpx.get(f"{fast_upstream.url}/stats").json()
                  ["streams_started"] - started >= STREAMS + LEGACY)
        assert not answers, "the requests must still be in flight when SIGTERM comes"
        gw.proc.send_signal(signal.SIGTERM)
        gw.proc.wait(40)
    finally:
        gw.stop()
        for thread in threads:
            thread.join(30)
    output = gw.output()
    # uvicorn re-raises the signal once its graceful shutdown is done: -SIGTERM, not a kill.
    assert gw.proc.returncode in (0, -signal.SIGTERM), output[-4000:]
    assert "completion_not_recorded" not in output and "shutdown_step_failed" not in output
    assert "Traceback" not in output, output[-4000:]

    # Graceful shutdown (10 s) lets every in-flight request that fits in it finish with its
    # whole answer; the longer streams are cut off when it runs out, after their first chunks,
    # and the one still waiting for its first chunk is answered 503 gateway_shutdown, an
    # OpenAI error that SDKs retry (not uvicorn's plain-text 500).
    refused = [a for a in answers if a[1] != 200]
    assert failures == [] and len(refused) == PREFILL, (refused, failures)
    for _, status, text in refused:
        assert status == 503 and json.loads(text)["error"]["code"] == "gateway_shutdown", text
    answers = [a for a in answers if a[1] == 200]
    assert len(answers) == len(bodies) - PREFILL
    streamed = [text for _, _, text in answers if text.startswith("data: ")]
    assert len(streamed) == STREAMS + LEGACY + LONG
    done = [text for text in streamed if text.rstrip().endswith("data: [DONE]")]
    cut = [text for text in streamed if text.endswith(CUT)]
    assert (len(done), len(cut)) == (STREAMS + LEGACY, LONG)

    # The stopped gateway's store, as `sealgate audit verify` sees it: one log, every record
    # in the tree and under the final checkpoint.
    result = gw.cli("audit", "verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and len(report["logs"]) == 1, report
    (log,) = report["logs"]
    # Records of this test: key creation writes none; each request an intent and a completion,
    # the one cut off before its first chunk included (gateway_shutdown).
    assert log["records"] == 2 * len(bodies), log
    assert _shutdown_completions(gw.data_dir) == LONG + PREFILL
    assert log["records"] == log["integrated"] == log["size"], log
    for request_id, _, _ in answers:
        assert _kinds_in_store(gw.data_dir, request_id) == ["completion", "intent"], request_id
    cut_ids = {request_id for request_id, _, text in answers if text.endswith(CUT)}

    # A gateway restarted on the same data directory serves each request's two records.
    restarted = start_gateway(workdir, config, data_dir=gw.data_dir)
    try:
        for request_id, _, _ in answers:
            found = request_records(restarted, key, request_id)
            assert set(found) == {"intent", "completion"}, (request_id, sorted(found))
            assert found["completion"]["status"] == 200
            # A stream cut off says the gateway cut it; the finished ones say nothing.
            assert found["completion"].get("abort_reason") == (
                "gateway_shutdown" if request_id in cut_ids else None), found
    finally:
        restarted.stop()
