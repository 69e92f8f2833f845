"""vLLM backend: supervise a ``vllm serve`` child on loopback, or use an existing vLLM service.

Requests go through the OpenAI-compatible upstream backend either way. The supervised child is
started with request logging off (prompts must never reach its logs), bound to loopback only,
health-checked, and restarted when it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from inference._base import GenerationKind, Json
from inference._errors import BackendUnavailable
from inference._openai import OpenAIBackend, OpenAIConfig, api_key

__all__ = ["VLLMBackend", "VLLMConfig"]


@dataclass(frozen=True, slots=True)
class VLLMConfig:
    """Settings of the vLLM backend."""

    model: str = ""
    """Model path or name passed to ``vllm serve`` (supervised mode)."""
    url: str = ""
    """Base URL (with ``/v1``) of an existing vLLM service; empty means supervise a child."""
    api_key_env: str = ""
    """Name of the environment variable holding the vLLM API key (never the key itself): sent
    with every request, and required by a supervised child too (its ``VLLM_API_KEY``)."""
    timeout_s: float = 600.0
    """Read timeout for one request."""
    port: int = 8011
    """Loopback port of the supervised child."""
    python: str = ""
    """Python interpreter that has vLLM installed; empty means this one."""
    served_model_name: str = ""
    """``--served-model-name``; empty means vLLM's default (the model path)."""
    tensor_parallel_size: int = 1
    """``--tensor-parallel-size``."""
    extra_args: tuple[str, ...] = ()
    """Further ``vllm serve`` arguments (e.g. ``--max-model-len 2048``)."""
    startup_timeout_s: float = 600.0
    """How long the child may take to answer ``/health``."""
    health_interval_s: float = 5.0
    """Seconds between health checks of the child."""
    max_restarts: int = 5
    """Restarts allowed before the backend stays down."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the child (e.g. ``VLLM_CPU_KVCACHE_SPACE``)."""
    debug_log: str = ""
    """File that receives the child's stdout and stderr, for debugging start-up; empty (the
    default) discards them. Request logging stays off either way."""

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        for arg in self.extra_args:
            if _reserved(arg):
                raise ValueError(f"extra_args may not set {arg.split('=')[0]}: the gateway fixes "
                                 "the child's address, model and request logging")


# Options the gateway sets itself. argparse also takes any unambiguous abbreviation of an
# option, so an extra argument that is a prefix of one of these is refused too.
_RESERVED = ("--host", "--port", "--uds", "--model", "--served-model-name",
             "--tensor-parallel-size", "--enable-log-requests", "--no-enable-log-requests",
             "--enable-log-outputs", "--disable-log-requests", "--disable-uvicorn-access-log")


def _reserved(arg: str) -> bool:
    name = arg.split("=", 1)[0]
    if not name.startswith("--") or len(name) < 3:
        return False
    return "log-requests" in name or "log-outputs" in name or any(
        flag.startswith(name) for flag in _RESERVED)


def _port_free(port: int) -> bool:
    """Nothing listens on the port. (SO_REUSEADDR: our own child's connections left in
    TIME_WAIT after it died must not block its restart; on Linux a listener still does.)"""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Runs first in the child, then becomes vLLM (same process): on Linux the child gets SIGTERM when
# the gateway dies, however it dies, so it never outlives it holding the port and the GPU. (Done
# by exec, not preexec_fn, which is unsafe in a process with threads.)
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the gateway exited before vllm started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class VLLMBackend:
    """Supervises vLLM and forwards to it through :class:`OpenAIBackend`."""

    def __init__(self, name: str, config: VLLMConfig) -> None:
        self.name = name
        self._config = config
        self._managed = not config.url
        url = config.url or f"http://127.0.0.1:{config.port}/v1"
        self._upstream = OpenAIBackend(name, OpenAIConfig(
            url=url, timeout_s=config.timeout_s, api_key_env=config.api_key_env))
        self._process: asyncio.subprocess.Process | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._restarts = 0
        self._healthy = False

    def command(self) -> list[str]:
        """The child's command line: loopback only, request logging off. The fixed options
        come after ``extra_args`` (the last occurrence wins), which may not name them anyway."""
        cfg = self._config
        python = cfg.python or sys.executable
        cmd = [python, "-c", _LAUNCHER, str(os.getpid()),
               python, "-m", "vllm.entrypoints.openai.api_server",
               *cfg.extra_args, "--model", cfg.model, "--host", "127.0.0.1",
               "--port", str(cfg.port), "--tensor-parallel-size", str(cfg.tensor_parallel_size),
               "--disable-uvicorn-access-log", "--no-enable-log-requests"]
        if cfg.served_model_name:
            cmd += ["--served-model-name", cfg.served_model_name]
        return cmd

    async def start(self) -> None:
        await self._upstream.start()
        if self._managed:
            await self._spawn()
            self._watchdog = asyncio.create_task(self._watch(), name=f"vllm-watchdog-{self.name}")
        else:
            self._healthy = await self._upstream.ready()

    async def _spawn(self) -> None:
        if not _port_free(self._config.port):
            # Whatever holds the port would pass our health checks and get our requests.
            raise BackendUnavailable(f"loopback port {self._config.port} for vllm is in use")
        env = {**os.environ, **self._config.env, "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if self._config.api_key_env:  # the child answers only requests that carry the key
            env["VLLM_API_KEY"] = api_key(self._config.api_key_env)
        with self._output() as output:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=output, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self._config.startup_timeout_s
        while time.monotonic() < deadline:
            if (code := self._process.returncode) is not None:
                await self._stop_child()
                raise BackendUnavailable(f"vllm exited during start-up ({code})")
            if await self._health() and self._process.returncode is None:
                self._healthy = True
                return
            await asyncio.sleep(1.0)
        await self._stop_child()
        raise BackendUnavailable("vllm did not become healthy in time")

    @contextlib.contextmanager
    def _output(self) -> Iterator[IO[bytes] | int]:
        """Where the child's output goes: discarded, or appended to ``debug_log``."""
        if not self._config.debug_log:
            yield asyncio.subprocess.DEVNULL
            return
        with open(self._config.debug_log, "ab") as handle:
            yield handle

    async def _health(self) -> bool:
        base = f"http://127.0.0.1:{self._config.port}"
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
                return (await client.get(f"{base}/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_interval_s)
            process = self._process
            alive = process is not None and process.returncode is None
            self._healthy = alive and await self._health()
            if alive:
                continue
            await self._stop_child()
            if self._restarts >= self._config.max_restarts:
                continue
            self._restarts += 1
            with contextlib.suppress(BackendUnavailable):
                await self._spawn()

    async def _stop_child(self) -> None:
        """Stop the child's whole process group: vLLM's engine and worker processes outlive a
        killed API server otherwise, holding the model's memory."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and (
                process.returncode is None or _signal_group(process.pid, 0)):
            await asyncio.sleep(0.2)
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self._stop_child()
        await self._upstream.close()

    async def ready(self) -> bool:
        if not self._managed:
            return await self._upstream.ready()
        return self._healthy and self._process is not None and self._process.returncode is None

    def _child_running(self) -> None:
        """Forward only to our own child: while it is down, whatever took its port is not it."""
        if self._managed and (self._process is None or self._process.returncode is not None):
            raise BackendUnavailable("vllm is not running")

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any]) -> Json:
        self._child_running()
        return await self._upstream.generate(kind, body)

    async def stream(self, kind: GenerationKind, body: Mapping[str, Any]) -> AsyncIterator[Json]:
        # A generator: its failures arrive with the first chunk, where callers handle them.
        self._child_running()
        chunks = self._upstream.stream(kind, body)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def embed(self, body: Mapping[str, Any]) -> Json:
        self._child_running()
        return await self._upstream.embed(body)
