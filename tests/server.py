"""Real servers on loopback for integration tests: ``sealgate serve`` and the fast upstream,
each as its own process, with their output captured to files the tests can inspect."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def fast_config(upstream_port: int, **settings: object) -> str:
    """A gateway config whose one model, ``fast``, is served by the fast upstream; keyword
    arguments become top-level settings (strings quoted, booleans lower-case)."""
    lines = [f"{k} = {_toml(v)}" for k, v in settings.items()]
    lines += ["[backends.fast]", 'type = "openai"', f'url = "http://127.0.0.1:{upstream_port}/v1"',
              "[models.fast]", 'backend = "fast"', 'retention_tier = "attested-zero"']
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Proc:
    """A child process whose stdout+stderr go to ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start_tool(workdir: Path, module: str, *args: str) -> Proc:
    """Start a measurement tool (``python -m tests.MODULE PORT ARGS``) and wait for /health."""
    port = free_port()
    log = workdir / f"{module.replace('_', '-')}-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", f"tests.{module}", str(port), *args], cwd=ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health", 30, proc)
    return Proc(proc, log, port)


def start_fast_upstream(workdir: Path) -> Proc:
    return _start_tool(workdir, "fast_upstream")


def start_bare_forwarder(workdir: Path, upstream: Proc) -> Proc:
    """The bare forwarder (measurement tool) in front of ``upstream``."""
    return _start_tool(workdir, "bare_forwarder", upstream.url)


@dataclass
class Gateway(Proc):
    data_dir: Path = field(default=Path())
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args)

    def new_key(self, tenant: str) -> str:
        self.cli("tenants", "create", tenant, "--exist-ok")
        result = self.cli("keys", "create", "--tenant", tenant)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def start_gateway(workdir: Path, config: str, extra_env: dict[str, str] | None = None,
                  timeout: float = 120.0, *, data_dir: Path | None = None,
                  port: int | None = None) -> Gateway:
    """Start ``sealgate serve`` with ``config`` (TOML) and its own data directory (or, to
    restart, an existing one)."""
    port = port or free_port()
    data_dir = data_dir or workdir / f"data-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"sealgate-{port}.toml"
    config_path.write_text(config)
    env = {**os.environ, "SEALGATE_DATA_DIR": str(data_dir), "SEALGATE_CONFIG": str(config_path),
           "TMPDIR": str(workdir), **(extra_env or {})}
    log = workdir / f"gateway-{port}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    gateway = Gateway(proc, log, port, data_dir, env)
    try:
        wait_http(f"{gateway.url}/healthz", timeout, proc)
    except Exception:
        gateway.stop()
        raise RuntimeError("gateway failed to start:\n" + gateway.output()[-4000:]) from None
    return gateway


@contextlib.contextmanager
def fast_gateway(**settings: object) -> Iterator[tuple[Proc, Gateway, str]]:
    """A fast upstream and a gateway in front of it, with a tenant key, in a temp dir;
    for benchmarks that compare the gateway with calling the upstream directly."""
    with tempfile.TemporaryDirectory() as tmp:
        upstream = start_fast_upstream(Path(tmp))
        try:
            gateway = start_gateway(Path(tmp), fast_config(upstream.port, **settings))
            try:
                yield upstream, gateway, gateway.new_key("bench")
            finally:
                gateway.stop()
        finally:
            upstream.stop()
