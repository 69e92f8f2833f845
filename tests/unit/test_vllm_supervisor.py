"""The vLLM supervisor under faults: refused options and environment, a squatted or stolen
port, a failed start-up, a child that dies, hangs or leaves a stubborn worker, a watchdog that
meets an error, and a gateway that dies. The child is a stand-in (``StandInVLLM``, a
fault-injection tool) that answers ``/health`` on the address its command line names; the real
vLLM runs in tests/vllm."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from inference import (
    BackendRouter,
    ModelRoute,
    OpenAIBackend,
    OpenAIConfig,
    RetentionTier,
    VLLMBackend,
    VLLMConfig,
    _ports,
    _vllm,
)
from inference._errors import BackendUnavailable
from proxy.telemetry import ALLOWED_FIELDS
from tests.conftest import need
from tests.server import free_port

STAND_IN = textwrap.dedent("""
    # StandInVLLM: parses the options vLLM's API server takes (the last occurrence wins, as in
    # argparse), records them and its environment, and answers /health where they say. Faults
    # on request: STAND_IN_BIND_DELAY (seconds of loading before it binds), a "RECORD.hang"
    # file (requests hang while it exists), STAND_IN_WORKER (a worker in its process group that
    # ignores SIGTERM, its pid in "RECORD.worker") and STAND_IN_EXIT_AFTER (seconds to live).
    import argparse, http.server, json, os, subprocess, sys, threading, time
    parser = argparse.ArgumentParser()
    parser.add_argument("--host"); parser.add_argument("--port", type=int)
    parser.add_argument("--no-enable-log-requests", action="store_true")
    args, _ = parser.parse_known_args()
    key = os.environ.get("VLLM_API_KEY")
    record = os.environ["STAND_IN_RECORD"]
    with open(record, "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "key": key,
                              "env": dict(os.environ)}) + "\\n")
    if os.environ.get("STAND_IN_WORKER"):
        worker = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                   "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
        with open(record + ".worker", "w") as out:
            out.write(str(worker.pid))
    if "STAND_IN_EXIT_AFTER" in os.environ:
        threading.Timer(float(os.environ["STAND_IN_EXIT_AFTER"]), os._exit, (3,)).start()
    time.sleep(float(os.environ.get("STAND_IN_BIND_DELAY", "0")))
    def hang():
        while os.path.exists(record + ".hang"):
            time.sleep(0.05)
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hang()
            self.send_response(200); self.end_headers()
        def do_POST(self):  # with VLLM_API_KEY set, vLLM answers only requests that carry it
            self.rfile.read(int(self.headers["content-length"]))
            hang()
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


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def _restarted(backend: VLLMBackend, old_pid: int) -> bool:
    """Ready again, with a new child."""
    return (await backend.ready() and backend._process is not None
            and backend._process.pid != old_pid)


def _vllm_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The supervisor's log events, each checked to carry only fields the gateway's log
    processor keeps (anything else would be dropped silently)."""
    events = [entry for entry in logs if entry["event"].startswith("vllm_")]
    for entry in events:
        assert set(entry) - {"log_level"} <= ALLOWED_FIELDS, entry
    return events


@pytest.fixture
def fast_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff and health-check timeout scaled down from seconds to tenths."""
    monkeypatch.setattr(_vllm, "_BACKOFF_FIRST_S", 0.1)
    monkeypatch.setattr(_vllm, "_BACKOFF_MAX_S", 1.5)
    monkeypatch.setattr(_vllm, "_HEALTH_TIMEOUT_S", 0.5)


@pytest.mark.parametrize("arg", ["--host", "--host=0.0.0.0", "--ho", "--port=1", "--enable-log-requests",
                                 "--enable-log-outputs", "--enable-log", "--uds", "--model=other",
                                 "--no-enable-log-requests", "--served-model-name",
                                 "--enable_log_requests", "--enable_log_r", "--middleware",
                                 "--middleware=logging_bodies.Middleware", "--midd", "--config",
                                 "--config=serve.yaml", "--log-config-file=/tmp/debug.json",
                                 "--log-config", "--log_config_file",
                                 '--kv-events-config={"publisher": "zmq"}', "--kv-transfer-config",
                                 "--kv_events_config", "--ec-transfer-config", "--otlp-traces-endpoint",
                                 "--collect-detailed-traces", "--tool-parser-plugin=x.py",
                                 "--reasoning-parser-plugin", "--io-processor-plugin",
                                 "--logits-processors", "--worker-cls", "--worker-extension-cls",
                                 "--scheduler-cls", "--allowed-local-media-path=/",
                                 # vLLM's dotted form sets one key of a JSON option
                                 "--kv-events-config.publisher", "--kv-events.publisher=zmq",
                                 "--kv-transfer-config.kv_connector=X", "--ec_transfer_config.x",
                                 "--kv-events-config.endpoint+"])
def test_options_the_gateway_fixes_are_refused(arg: str) -> None:
    with pytest.raises(ValueError, match="extra_args may not set"):
        VLLMConfig(model="m", extra_args=(arg, "x"))


@pytest.mark.parametrize("name", ["VLLM_DEBUG_LOG_API_SERVER_RESPONSE", "VLLM_LOG_REQUESTS",
                                  "VLLM_LOG_RESPONSES", "VLLM_LOG_API_BODIES", "VLLM_LOG_OUTPUTS",
                                  "SOME_LOG_PROMPTS", "vllm_debug_log_anything",
                                  "VLLM_LOGGING_CONFIG_PATH"])
def test_environment_that_turns_on_content_logging_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"env may not set {name}"):
        VLLMConfig(model="m", env={name: "true"})


def test_the_child_logs_at_info_or_quieter() -> None:
    """At DEBUG, vLLM's tool and reasoning parsers log generated text."""
    with pytest.raises(ValueError, match="VLLM_LOGGING_LEVEL to INFO or quieter only"):
        VLLMConfig(model="m", env={"VLLM_LOGGING_LEVEL": "debug"})
    assert VLLMConfig(model="m", env={"VLLM_LOGGING_LEVEL": "WARNING"}).env["VLLM_LOGGING_LEVEL"]


@pytest.mark.parametrize("field", [{"port": 0}, {"port": 70000}, {"health_interval_s": 0},
                                   {"startup_timeout_s": -1}, {"max_restarts": -1},
                                   {"tensor_parallel_size": 0}])
def test_out_of_range_settings_are_refused(field: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(field))} must be"):
        VLLMConfig(model="m", **field)  # type: ignore[arg-type]


def test_settings_that_log_nothing_are_accepted() -> None:
    config = VLLMConfig(model="m", env={"VLLM_LOGGING_LEVEL": "INFO", "VLLM_LOG_STATS_INTERVAL": "10"},
                        extra_args=("--config-format", "hf", "--max-model-len", "2048"))
    assert config.env["VLLM_LOGGING_LEVEL"] == "INFO"


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


def test_the_child_gets_an_allow_listed_environment(stand_in: dict[str, str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"SEALGATE_SESSION_SECRET": "dash-secret", "UPSTREAM_API_KEY_OPENAI": "sk-other",
               "SEALGATE_DATABASE_URL": "postgresql+psycopg://sg:db-pass@db/sg",
               "SG_TEST_VLLM_KEY": "sk-vllm-2b9e", "VLLM_API_KEY": "sk-inherited",
               "VLLM_DEBUG_LOG_API_SERVER_RESPONSE": "true", "VLLM_LOGGING_CONFIG_PATH": "/x.json",
               # credentials under allowed prefixes
               "NVIDIA_API_KEY": "nvapi-other", "HF_TOKEN": "hf_x"}
    kept = {"CUDA_VISIBLE_DEVICES": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "LC_PAPER": "C",
            "HF_HOME": str(tmp_path)}
    for name, value in {**secrets, **kept, "VLLM_LOGGING_LEVEL": "DEBUG"}.items():
        monkeypatch.setenv(name, value)

    async def run() -> None:
        backend = VLLMBackend("v", _config({**stand_in, "TORCH_EXTENSIONS_DIR": "/x"}, free_port(),
                                           api_key_env="SG_TEST_VLLM_KEY"))
        await backend.start()
        await backend.close()

    asyncio.run(run())
    (started,) = [json.loads(line) for line in (tmp_path / "record").read_text().splitlines()]
    env = started["env"]
    assert not set(secrets) - {"VLLM_API_KEY"} & set(env)
    assert env["VLLM_API_KEY"] == "sk-vllm-2b9e"  # the key the gateway sends, not an inherited one
    assert {name: env.get(name) for name in kept} == kept
    assert env["TORCH_EXTENSIONS_DIR"] == "/x" and env["PATH"] == os.environ["PATH"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_LOGGING_LEVEL"] == "INFO"  # at DEBUG, vLLM's parsers log generated text


class _Squatter(http.server.BaseHTTPRequestHandler):
    """Answers /health like vLLM and records what it is sent."""

    received: list[tuple[str | None, bytes]] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.headers.get("authorization"), body))
        self.send_response(500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[Callable[[int, float], list[tuple[str | None, bytes]]]]:
    """Starts, after a delay, a process-local HTTP server on a port; stops it at the end."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def squat(port: int, after: float) -> list[tuple[str | None, bytes]]:
        def serve() -> None:
            time.sleep(after)
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Squatter)
            servers.append(server)
            server.serve_forever(poll_interval=0.05)
        _Squatter.received = []
        threading.Thread(target=serve, daemon=True).start()
        return _Squatter.received

    yield squat
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_port_taken_while_the_child_loads_is_refused(
        stand_in: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        squatter: Callable[[int, float], list[tuple[str | None, bytes]]]) -> None:
    # The port is free when checked; the child then "loads" for seconds before it binds, and
    # another local process binds the port first and answers /health.
    monkeypatch.setenv("SG_TEST_VLLM_KEY", "sk-vllm-5d0a")
    port = free_port()
    backend = VLLMBackend("v", _config({**stand_in, "STAND_IN_BIND_DELAY": "10"}, port,
                                       api_key_env="SG_TEST_VLLM_KEY"))
    received = squatter(port, 0.3)

    async def run() -> None:
        try:
            with pytest.raises(BackendUnavailable, match=f"port {port} .* taken by another process"):
                await backend.start()
            assert not await backend.ready()
            with pytest.raises(BackendUnavailable, match="not running"):
                await backend.generate("chat", {"model": "m", "messages": []})
        finally:
            await backend.close()

    asyncio.run(run())
    assert received == []
    (started,) = [json.loads(line) for line in (tmp_path / "record").read_text().splitlines()]
    assert _wait_gone(started["pid"]), "the child was left running"


def test_the_port_holder_is_told_from_proc() -> None:
    port = free_port()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        assert _ports.port_holder(port, os.getpgid(0)) is None  # nothing listens
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))
            listener.listen()
            assert _ports.port_holder(port, os.getpgid(0)) is True  # this test's group holds it
            assert _ports.port_holder(port, other.pid) is False  # another group does not
        try:
            wildcard = socket.socket(socket.AF_INET6)
            wildcard.bind(("::", port))
        except OSError:
            wildcard = None
        need(wildcard is not None, "no IPv6 (cannot bind [::])")
        assert wildcard is not None
        with wildcard:  # [::] takes connections to 127.0.0.1 too
            wildcard.listen()
            assert _ports.port_holder(port, other.pid) is False
    finally:
        other.kill()
        other.wait()


def test_an_unreadable_proc_fails_closed(stand_in: dict[str, str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        monkeypatch.setattr(_ports, "_PROC", tmp_path / "no-proc")
        backend = VLLMBackend("v", _config(stand_in, free_port()))
        with pytest.raises(BackendUnavailable, match="/proc is unreadable"):
            await backend.start()
        await backend.close()
        monkeypatch.undo()
        backend = VLLMBackend("v", _config(stand_in, free_port()))
        await backend.start()
        try:  # in the watchdog: the next health check fails, and requests with it
            monkeypatch.setattr(_ports, "_PROC", tmp_path / "no-proc")
            await _eventually(lambda: _not(backend.ready()), "still ready without /proc")
            with pytest.raises(BackendUnavailable, match="not answering its health checks"):
                await backend.generate("chat", {"model": "m", "messages": []})
        finally:
            await backend.close()

    asyncio.run(run())


async def _not(ready: Awaitable[bool]) -> bool:
    return not await ready


@pytest.mark.usefixtures("fast_restarts")
def test_a_hung_child_fails_requests_fast_and_is_restarted(stand_in: dict[str, str],
                                                           tmp_path: Path) -> None:
    # The child accepts connections and never answers (a deadlocked engine).
    hang = tmp_path / "record.hang"

    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), timeout_s=60.0))
        await backend.start()
        try:
            assert backend._process is not None
            first = backend._process.pid
            hang.write_text("")
            await _eventually(lambda: _not(backend.ready()), "a hung child stayed ready")
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await backend.generate("chat", {"model": "m", "messages": []})
            assert time.monotonic() - started < 1.0, "the request waited on the hung child"
            await _eventually(lambda: _new_child(backend, first), "the hung child was not replaced")
            hang.unlink()
            await _eventually(lambda: _restarted(backend, first), "no healthy child after the hang")
        finally:
            hang.unlink(missing_ok=True)
            await backend.close()

    with capture_logs() as logs:
        asyncio.run(run())
    events = _vllm_events(logs)
    failed = [e["count"] for e in events if e["event"] == "vllm_health_check_failed"]
    assert failed[:3] == [1, 2, 3]
    assert {"event": "vllm_restart_scheduled", "backend": "v", "reason": "unresponsive",
            "count": 0, "log_level": "warning"} in events
    assert any(e["event"] == "vllm_restarted" for e in events)


async def _new_child(backend: VLLMBackend, old_pid: int) -> bool:
    return backend._process is not None and backend._process.pid != old_pid


@pytest.mark.usefixtures("fast_restarts")
def test_restarts_back_off_and_never_give_up(stand_in: dict[str, str]) -> None:
    # max_restarts=1: the first crash is restarted at once (0.1 s here), the later ones in the
    # window at the slowest pace (1.5 s here), but they are restarted.
    delays = []

    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), max_restarts=1))
        await backend.start()
        try:
            for _ in range(3):
                assert backend._process is not None
                pid = backend._process.pid
                backend._process.kill()
                killed = time.monotonic()
                await _eventually(lambda: _not(backend.ready()), "a dead child stayed ready")
                with pytest.raises(BackendUnavailable, match="not running"):
                    await backend.generate("chat", {"model": "m", "messages": []})
                await _eventually(lambda: _restarted(backend, pid), "the child was not restarted")
                delays.append(time.monotonic() - killed)
        finally:
            await backend.close()

    with capture_logs() as logs:
        asyncio.run(run())
    assert delays[0] < 1.5 <= delays[1] and delays[2] >= 1.5
    events = _vllm_events(logs)
    assert [e["code"] for e in events if e["event"] == "vllm_exited"] == [-signal.SIGKILL] * 3
    assert [e["count"] for e in events if e["event"] == "vllm_restart_scheduled"] == [0, 2, 2]
    assert [e["count"] for e in events if e["event"] == "vllm_restart_budget_spent"] == [2, 3]


@pytest.mark.usefixtures("fast_restarts")
def test_the_restart_budget_is_counted_in_a_window(stand_in: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Crashes further apart than the window never spend the budget, however many there are.
    monkeypatch.setattr(_vllm, "_RESTART_WINDOW_S", 0.6)
    monkeypatch.setattr(_vllm, "_BACKOFF_MAX_S", 60.0)

    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), max_restarts=1))
        await backend.start()
        try:
            for _ in range(3):
                await asyncio.sleep(0.8)
                assert backend._process is not None
                pid = backend._process.pid
                backend._process.kill()
                await _eventually(lambda: _restarted(backend, pid), "the child was not restarted",
                                  within=10.0)
        finally:
            await backend.close()

    asyncio.run(run())


def test_close_finishes_a_stop_in_progress(stand_in: dict[str, str], tmp_path: Path) -> None:
    # The API server dies and leaves a worker of its group that ignores SIGTERM; the watchdog
    # is waiting for the group to exit when the gateway shuts down.
    env = {**stand_in, "STAND_IN_WORKER": "1", "STAND_IN_EXIT_AFTER": "1.5"}

    async def run() -> int:
        backend = VLLMBackend("v", _config(env, free_port()))
        await backend.start()
        assert backend._process is not None
        server = backend._process.pid
        worker = int((tmp_path / "record.worker").read_text())
        await _eventually(lambda: _gone(server), "the API server did not exit")
        await asyncio.sleep(0.6)  # the watchdog saw it and sent the group SIGTERM
        assert _alive(worker)
        started = time.monotonic()
        await backend.close()
        assert time.monotonic() - started < 10.0
        return worker

    worker = asyncio.run(run())
    try:
        assert _wait_gone(worker, within=5.0), "a worker of the child's group outlived close()"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


async def _gone(pid: int) -> bool:
    return not _alive(pid)


@pytest.mark.usefixtures("fast_restarts")
def test_the_watchdog_logs_an_error_and_goes_on(stand_in: dict[str, str], tmp_path: Path) -> None:
    # An error other than BackendUnavailable during a restart: debug_log's folder is gone.
    folder = tmp_path / "logs"
    folder.mkdir()

    async def run() -> None:
        backend = VLLMBackend("v", _config(stand_in, free_port(), debug_log=str(folder / "vllm.log")))
        await backend.start()
        try:
            assert backend._process is not None and backend._watchdog is not None
            pid = backend._process.pid
            shutil.rmtree(folder)
            backend._process.kill()
            await _eventually(lambda: _logged(logs, "vllm_supervisor_error"), "no error logged")
            assert not backend._watchdog.done()
            folder.mkdir()
            await _eventually(lambda: _restarted(backend, pid), "the watchdog stopped restarting")
        finally:
            await backend.close()

    with capture_logs() as logs:
        asyncio.run(run())
    events = _vllm_events(logs)
    assert {"event": "vllm_supervisor_error", "backend": "v", "error_type": "FileNotFoundError",
            "log_level": "error"} in events
    assert any(e["event"] == "vllm_restart_scheduled" and e["reason"] == "start_failed"
               for e in events)


async def _logged(logs: list[dict[str, Any]], event: str) -> bool:
    return any(entry["event"] == event for entry in logs)
