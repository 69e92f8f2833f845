"""The vLLM supervisor under faults: refused options, a squatted port, a failed start-up and a
gateway that dies. The child is a stand-in (``StandInVLLM``, a fault-injection tool) that
answers ``/health`` on the address its command line names; the real vLLM runs in tests/vllm."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inference import (
    BackendRouter,
    ModelRoute,
    OpenAIBackend,
    OpenAIConfig,
    RetentionTier,
    VLLMBackend,
    VLLMConfig,
)
from inference._errors import BackendUnavailable
from tests.server import free_port

STAND_IN = textwrap.dedent("""
    # StandInVLLM: parses the options vLLM's API server takes (the last occurrence wins, as in
    # argparse), records them, and answers /health where they say.
    import argparse, http.server, json, os, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--host"); parser.add_argument("--port", type=int)
    parser.add_argument("--no-enable-log-requests", action="store_true")
    args, _ = parser.parse_known_args()
    key = os.environ.get("VLLM_API_KEY")
    with open(os.environ["STAND_IN_RECORD"], "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "key": key}) + "\\n")
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def do_POST(self):  # with VLLM_API_KEY set, vLLM answers only requests that carry it
            self.rfile.read(int(self.headers["content-length"]))
            ok = key is None or self.headers.get("authorization") == "Bearer " + key
            body = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                               "choices": [{"index": 0, "finish_reason": "stop", "message":
                                            {"role": "assistant", "content": "ok"}}]}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body) if ok else 0)); self.end_headers()
            if ok:
                self.wfile.write(body)
        def log_message(self, *a):
            pass
    http.server.HTTPServer((args.host, args.port), Health).serve_forever()
""")


@pytest.fixture
def stand_in(tmp_path: Path) -> dict[str, str]:
    """Environment that makes ``python -m vllm.entrypoints.openai.api_server`` the stand-in."""
    package = tmp_path / "site" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(STAND_IN)
    return {"PYTHONPATH": str(tmp_path / "site"), "STAND_IN_RECORD": str(tmp_path / "record")}


def _config(env: dict[str, str], port: int, **kw: object) -> VLLMConfig:
    return VLLMConfig(model="m", port=port, env=env, startup_timeout_s=20,
                      health_interval_s=0.2, **kw)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not reaped (its parent is this test process in some cases).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("arg", ["--host", "--host=0.0.0.0", "--ho", "--port=1", "--enable-log-requests",
                                 "--enable-log-outputs", "--enable-log", "--uds", "--model=other",
                                 "--no-enable-log-requests", "--served-model-name"])
def test_options_the_gateway_fixes_are_refused(arg: str) -> None:
    with pytest.raises(ValueError, match="extra_args may not set"):
        VLLMConfig(model="m", extra_args=(arg, "x"))


def test_fixed_options_come_last() -> None:
    config = VLLMConfig(model="m", port=8123, extra_args=("--max-model-len", "2048"))
    command = VLLMBackend("v", config).command()
    server = command.index("vllm.entrypoints.openai.api_server")
    assert command[server + 1: server + 3] == ["--max-model-len", "2048"]
    tail = command[server + 3:]
    assert tail[tail.index("--host") + 1] == "127.0.0.1" and "--no-enable-log-requests" in tail


def test_a_squatted_port_is_not_taken_for_the_child(stand_in: dict[str, str]) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        backend = VLLMBackend("v", _config(stand_in, port))
        with pytest.raises(BackendUnavailable, match="in use"):
            asyncio.run(backend.start())


def test_a_failed_start_up_stops_the_children_already_started(stand_in: dict[str, str],
                                                              tmp_path: Path) -> None:
    squatted = free_port()
    backends = {"first": VLLMBackend("first", _config(stand_in, free_port())),
                "second": VLLMBackend("second", _config(stand_in, squatted))}
    routes = [ModelRoute(name, name, RetentionTier.ATTESTED_ZERO) for name in backends]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", squatted))
        squatter.listen()
        with pytest.raises(BackendUnavailable):
            asyncio.run(BackendRouter(routes, backends).start())
    (started,) = [line for line in (tmp_path / "record").read_text().splitlines()]
    pid = int(started.split('"pid": ')[1].split(",")[0])
    assert _wait_gone(pid), "the first backend's child outlived the failed start-up"


def test_the_child_dies_with_the_gateway(stand_in: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    script = textwrap.dedent(f"""
        import asyncio, sys
        from inference import VLLMBackend, VLLMConfig
        async def main():
            backend = VLLMBackend("v", VLLMConfig(model="m", port={port}, env={stand_in!r},
                                                  startup_timeout_s=20))
            await backend.start()
            print(backend._process.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    gateway = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert gateway.stdout is not None
        child = int(gateway.stdout.readline())
        assert _alive(child)
        gateway.send_signal(signal.SIGKILL)  # no clean-up code runs
        gateway.wait()
        assert _wait_gone(child), "the vllm child outlived a killed gateway"
    finally:
        gateway.kill()


def test_the_api_key_is_required_by_the_child_and_sent_with_requests(
        stand_in: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_VLLM_KEY", "sk-vllm-7f1c")

    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), api_key_env="SG_TEST_VLLM_KEY",
                                           timeout_s=30.0))
        await backend.start()
        try:
            answer = await backend.generate("chat", {"model": "m", "messages": []})
            assert answer["choices"][0]["message"]["content"] == "ok"
        finally:
            await backend.close()

    asyncio.run(run())
    (started,) = [json.loads(line) for line in (tmp_path / "record").read_text().splitlines()]
    assert started["key"] == "sk-vllm-7f1c"


@pytest.mark.parametrize("kind", ["vllm", "openai"])
def test_a_named_api_key_that_is_not_set_stops_the_start(
        stand_in: dict[str, str], monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.delenv("SG_TEST_UNSET_KEY", raising=False)
    backend = (VLLMBackend("v", _config(stand_in, free_port(), api_key_env="SG_TEST_UNSET_KEY"))
               if kind == "vllm" else
               OpenAIBackend("o", OpenAIConfig(url="http://127.0.0.1:9/v1",
                                               api_key_env="SG_TEST_UNSET_KEY")))

    async def run() -> None:
        try:
            await backend.start()
        finally:
            await backend.close()

    with pytest.raises(BackendUnavailable, match="SG_TEST_UNSET_KEY"):
        asyncio.run(run())


def test_a_dead_child_is_not_ready_and_gets_no_requests(stand_in: dict[str, str]) -> None:
    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), max_restarts=0))
        await backend.start()
        try:
            assert await backend.ready()
            assert backend._process is not None
            backend._process.kill()
            await backend._process.wait()
            assert not await backend.ready()
            with pytest.raises(BackendUnavailable, match="not running"):
                await backend.generate("chat", {"model": "m"})
        finally:
            await backend.close()

    asyncio.run(run())


def test_a_dead_child_comes_back_despite_its_closed_connections(stand_in: dict[str, str]) -> None:
    # The stand-in closes each health-check connection first, leaving them in TIME_WAIT on
    # the child's port after it dies: that must not read as a squatter.
    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), max_restarts=2))
        await backend.start()
        try:
            assert backend._process is not None
            first = backend._process.pid
            await asyncio.sleep(0.6)  # a few health checks
            backend._process.kill()
            deadline = time.monotonic() + 20
            while not (await backend.ready() and backend._process.pid != first):
                assert time.monotonic() < deadline, "the child was not restarted"
                await asyncio.sleep(0.2)
        finally:
            await backend.close()

    asyncio.run(run())


def test_a_stream_from_a_dead_child_fails_with_its_first_chunk(stand_in: dict[str, str]) -> None:
    # Raised where callers handle generation failures (and record them), not at the call.
    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), max_restarts=0))
        chunks = backend.stream("chat", {"model": "m"})
        with pytest.raises(BackendUnavailable, match="not running"):
            await anext(chunks)

    asyncio.run(run())
