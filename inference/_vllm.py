"""vLLM backend: supervise a ``vllm serve`` child on loopback, or use an existing vLLM service.

Requests go through the OpenAI-compatible upstream backend either way. The supervised child is
started with request logging off (prompts must never reach its logs), bound to loopback only,
given only an allow-listed environment (the gateway's secrets stay out of it), health-checked
(an answer counts only while its own process group holds the port), and restarted with backoff
when it dies or hangs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import structlog

from inference._base import GenerationKind, Json
from inference._errors import BackendUnavailable
from inference._openai import OpenAIBackend, OpenAIConfig, api_key, check_base_url
from inference._ports import port_free, port_holder

__all__ = ["VLLMBackend", "VLLMConfig"]

_log = structlog.get_logger("sealgate.inference")

# Restarts: the first after a crash waits _BACKOFF_FIRST_S, each further crash within
# _RESTART_WINDOW_S doubles the wait up to _BACKOFF_MAX_S, and past max_restarts crashes in the
# window every restart waits _BACKOFF_MAX_S. The supervisor never gives up: a crash loop costs
# one start a minute, a permanent give-up costs an outage until someone restarts the gateway.
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 60.0
_RESTART_WINDOW_S = 600.0
_HUNG_CHECKS = 3
"""Consecutive failed health checks after which a live child is taken for hung and restarted."""
_HEALTH_TIMEOUT_S = 2.0
_STOP_GRACE_S = 20.0
"""How long the child's group may take to exit on SIGTERM before it is SIGKILLed."""


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
    stream_timeout_s: float = 1800.0
    """The most one streamed answer may last, from the request to its last event."""
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
    """Restarts within 10 minutes that follow the doubling backoff (1 s, 2 s, 4 s, ...); past
    them the child is restarted once a minute until it stays up (never given up on)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the child (e.g. ``VLLM_CPU_KVCACHE_SPACE``). Of the gateway's own
    environment the child gets only the allow-listed variables (:func:`_child_env`); a variable
    that turns on request, response or prompt logging is refused."""
    debug_log: str = ""
    """File that receives the child's stdout and stderr, for debugging start-up; empty (the
    default) discards them. Request logging stays off either way."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "stream_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not math.isfinite(self.timeout_s):
            raise ValueError("timeout_s must be a finite number of seconds")
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be from 1 to 65535")
        for name in ("startup_timeout_s", "health_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be 0 or more")
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be 1 or more")
        if self.url:  # empty: a supervised child
            check_base_url(self.url)
        for arg in self.extra_args:
            if _reserved(arg):
                raise ValueError(f"extra_args may not set {arg.split('=')[0]}: the gateway fixes "
                                 "the child's address, model and request logging, and what "
                                 "sees its requests")
        for name, value in self.env.items():
            if _named(name, _CONTENT_LOGGING):
                raise ValueError(f"env may not set {name}: it turns on request or response "
                                 "logging in vllm, and prompts must never reach its logs")
            if name.upper() == _LEVEL and str(value).upper() not in _QUIET_LEVELS:
                raise ValueError(f"env may set {_LEVEL} to INFO or quieter only: at DEBUG, "
                                 "vllm logs generated text")


# Options the gateway sets itself, and options that would let an extra argument see, log or
# send out request content: ``--middleware`` and the plugin and class options (code of the
# operator's choosing in the request path), ``--config`` (a file that can set every other
# option, these included), ``--log-config-file`` (a logging configuration that can set any
# logger to DEBUG, at which vLLM logs generated text), ``--kv-events-config`` (publishes each
# prompt's token ids on a socket), the KV and encoder cache transfer options (cached prompt
# state to other hosts or disk), tracing export, and ``--allowed-local-media-path`` (requests
# reading files of the enclave). argparse also takes any unambiguous abbreviation of an
# option, so an extra argument that is a prefix of one of these is refused too.
_RESERVED = ("--host", "--port", "--uds", "--model", "--served-model-name",
             "--tensor-parallel-size", "--enable-log-requests", "--no-enable-log-requests",
             "--enable-log-outputs", "--disable-log-requests", "--disable-uvicorn-access-log",
             "--middleware", "--config", "--log-config-file", "--kv-events-config",
             "--kv-transfer-config", "--ec-transfer-config", "--otlp-traces-endpoint",
             "--collect-detailed-traces", "--tool-parser-plugin", "--reasoning-parser-plugin",
             "--io-processor-plugin", "--logits-processors", "--worker-cls",
             "--worker-extension-cls", "--scheduler-cls", "--allowed-local-media-path")


def _reserved(arg: str) -> bool:
    # vLLM's parser reads ``_`` in an option name as ``-`` (``--enable_log_requests``), and
    # ``--name.key value`` (``+`` appending to a list) as ``--name '{"key": value}'``.
    name = arg.split("=", 1)[0].split(".", 1)[0].rstrip("+").replace("_", "-")
    if not name.startswith("--") or len(name) < 3:
        return False
    return "log-requests" in name or "log-outputs" in name or "log-config" in name or any(
        flag.startswith(name) for flag in _RESERVED)


# The child's environment is built from an allow-list, not inherited whole: the gateway's own
# secrets (session secret, database URL with its password, other backends' API keys) are no
# business of vLLM, whose output may go to a file (``debug_log``).
_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR",
                        "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME",
                        "VIRTUAL_ENV"})
_ENV_PREFIXES = ("LC_", "VLLM_", "CUDA_", "NVIDIA_", "NCCL_", "HF_", "HUGGINGFACE_",
                 "TRANSFORMERS_", "TORCH", "PYTORCH_", "TRITON_", "OMP_", "MKL_", "KMP_",
                 "TOKENIZERS_", "XDG_")
# Name parts of switches that log request or response content, such as vLLM 0.32's
# VLLM_DEBUG_LOG_API_SERVER_RESPONSE (every response body, i.e. completions, into its output),
# or that change what vLLM logs at all (a logging configuration file can route any logger
# anywhere, at any level).
_CONTENT_LOGGING = ("DEBUG_LOG", "LOG_REQUEST", "LOG_RESPONSE", "LOG_API", "LOG_OUTPUT",
                    "LOG_PROMPT", "LOGGING_CONFIG")
# At DEBUG, vLLM's tool and reasoning parsers log generated text: the child logs at INFO unless
# the configured env asks for a quieter level.
_LEVEL = "VLLM_LOGGING_LEVEL"
_QUIET_LEVELS = frozenset({"INFO", "WARNING", "ERROR", "CRITICAL"})
# Name parts of variables that hold credentials: another backend's key, a hub token. The
# child's own key is the one the gateway sets (VLLM_API_KEY).
_CREDENTIALS = ("TOKEN", "API_KEY", "APIKEY", "SECRET", "PASSWORD", "CREDENTIAL")
# No telemetry, no downloads: the child runs offline inside the attested boundary.
_CHILD_FIXED = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1"}


def _named(name: str, parts: tuple[str, ...]) -> bool:
    """Whether the variable ``name`` contains one of ``parts`` (any case)."""
    upper = name.upper()
    return any(part in upper for part in parts)


def _child_env(extra: Mapping[str, str], key: str | None) -> dict[str, str]:
    """The child's environment: the allow-listed part of the gateway's, less any logging switch
    and any credential (``VLLM_API_KEY`` included: the child's key is the one the gateway sends,
    or none), then ``extra`` (the configured ``env``), the fixed settings and the key."""
    inherited = {name: value for name, value in os.environ.items()
                 if (name in _ENV_NAMES or name.startswith(_ENV_PREFIXES))
                 and not _named(name, _CONTENT_LOGGING + _CREDENTIALS) and name != _LEVEL}
    env = {**inherited, _LEVEL: "INFO", **extra, **_CHILD_FIXED}
    if key is not None:  # the child answers only requests that carry the key
        env["VLLM_API_KEY"] = key
    return env


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
        # vLLM keys its prefix cache by ``cache_salt`` too: one per tenant keeps them apart.
        self._upstream = OpenAIBackend(name, OpenAIConfig(
            url=url, timeout_s=config.timeout_s, stream_timeout_s=config.stream_timeout_s,
            api_key_env=config.api_key_env, cache_salt=True))
        self._process: asyncio.subprocess.Process | None = None
        """The child, kept until its process group has been killed and the child reaped."""
        self._watchdog: asyncio.Task[None] | None = None
        self._crashes: collections.deque[float] = collections.deque()
        """When the child crashed, hung or failed to start, within the restart window."""
        self._failed_checks = 0
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
        port = self._config.port
        if not port_free(port):
            # Whatever holds the port would pass our health checks and get our requests.
            raise BackendUnavailable(f"loopback port {port} for vllm is in use")
        key = api_key(self._config.api_key_env) if self._config.api_key_env else None
        with self._output() as output:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(), env=_child_env(self._config.env, key),
                stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        try:
            await self._until_healthy(self._process)
        except Exception:
            await self._stop_child()
            raise
        self._healthy = True
        self._failed_checks = 0

    async def _until_healthy(self, process: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self._config.startup_timeout_s
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise BackendUnavailable(f"vllm exited during start-up with status {process.returncode}")
            problem = await self._problem(process)
            if problem is None:
                return
            if problem == "port_taken":  # the child cannot bind it: no use waiting
                raise BackendUnavailable(f"loopback port {self._config.port} for vllm is taken by "
                                         "another process")
            if problem == "proc_unreadable":
                raise BackendUnavailable("cannot tell whether vllm holds its port: /proc is "
                                         "unreadable")
            await asyncio.sleep(min(1.0, self._config.health_interval_s))
        raise BackendUnavailable("vllm did not become healthy in time")

    @contextlib.contextmanager
    def _output(self) -> Iterator[IO[bytes] | int]:
        """Where the child's output goes: discarded, or appended to ``debug_log``."""
        if not self._config.debug_log:
            yield asyncio.subprocess.DEVNULL
            return
        fd = os.open(self._config.debug_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab") as handle:  # owner-only, as every other file the gateway writes
            yield handle

    async def _problem(self, process: asyncio.subprocess.Process) -> str | None:
        """What keeps the child from taking requests (a log reason), or None. A health answer
        counts only while the child's own process group holds the port: whatever else listens
        there (it may have bound the port while the child was still loading) answers too, and
        would receive prompts and the API key."""
        answered = await self._health()
        try:
            holder = await asyncio.to_thread(port_holder, self._config.port, process.pid)
        except (OSError, ValueError):
            return "proc_unreadable"  # unconfirmed is not ready: fail closed
        if holder is False:
            return "port_taken"
        if not (answered and holder) or process.returncode is not None:
            return "no_answer"
        return None

    async def _health(self) -> bool:
        base = f"http://127.0.0.1:{self._config.port}"
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=_HEALTH_TIMEOUT_S) as client:
                return (await client.get(f"{base}/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _watch(self) -> None:
        """Check the child every ``health_interval_s``; restart it when it has died or hangs.
        The loop outlives any error (logged): a watchdog that ended would leave vLLM down for
        good, silently. Cancellation (close) still ends it."""
        while True:
            await asyncio.sleep(self._config.health_interval_s)
            try:
                await self._check()
            except Exception as exc:
                with contextlib.suppress(Exception):  # not even a failing log may end the loop
                    _log.error("vllm_supervisor_error", backend=self.name,
                               error_type=type(exc).__name__)

    async def _check(self) -> None:
        process = self._process
        if process is None:  # a restart failed: try again, later each time
            await self._restart("start_failed")
            return
        if process.returncode is not None:
            _log.warning("vllm_exited", backend=self.name, code=process.returncode)
            await self._restart("exited")
            return
        problem = await self._problem(process)
        if problem is None:
            self._healthy, self._failed_checks = True, 0
            return
        # Unhealthy at once: requests fail fast with 503 instead of waiting timeout_s on a
        # child that does not answer, or going to whatever holds its port.
        self._healthy = False
        self._failed_checks += 1
        _log.warning("vllm_health_check_failed", backend=self.name, reason=problem,
                     count=self._failed_checks)
        if self._failed_checks >= _HUNG_CHECKS:
            await self._restart("unresponsive")

    async def _restart(self, reason: str) -> None:
        """Stop what is left of the child's group, wait out the backoff, start a new child."""
        await self._stop_child()
        self._failed_checks = 0
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes[0] < now - _RESTART_WINDOW_S:
            self._crashes.popleft()
        if len(self._crashes) > self._config.max_restarts:
            delay = _BACKOFF_MAX_S
            _log.error("vllm_restart_budget_spent", backend=self.name, count=len(self._crashes))
        else:
            delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (len(self._crashes) - 1))
        _log.warning("vllm_restart_scheduled", backend=self.name, reason=reason,
                     count=round(delay))
        await asyncio.sleep(delay)
        try:
            await self._spawn()
        except BackendUnavailable:  # its detail is prose, which logs never carry
            _log.error("vllm_restart_failed", backend=self.name)
            return
        _log.info("vllm_restarted", backend=self.name, port=self._config.port)

    async def _stop_child(self) -> None:
        """Stop the child's whole process group: vLLM's engine and worker processes outlive a
        killed API server otherwise, holding the model's memory. The child is forgotten only
        once its group has been SIGKILLed and it is reaped, and the SIGKILL is sent even when
        this is cancelled (a gateway shutting down meanwhile), so no worker outlives close()."""
        process = self._process
        if process is None:
            return
        self._healthy = False
        try:
            _signal_group(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_GRACE_S
            while time.monotonic() < deadline and (
                    process.returncode is None or _signal_group(process.pid, 0)):
                await asyncio.sleep(0.2)
        finally:
            _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
        if self._process is process:
            self._process = None

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait([self._watchdog])  # its own outcome is no reason to skip the rest
        try:
            await self._stop_child()  # also what a cancelled stop of the watchdog left
        finally:
            await self._upstream.close()

    async def ready(self) -> bool:
        if not self._managed:
            return await self._upstream.ready()
        return self._healthy and self._process is not None and self._process.returncode is None

    def _child_ready(self) -> None:
        """Forward only to our own child, and only while it passes its health checks: while it
        is down, restarting or hung, requests fail fast, and whatever took its port is not it."""
        if not self._managed:
            return
        if self._process is None or self._process.returncode is not None:
            raise BackendUnavailable("vllm is not running")
        if not self._healthy:
            raise BackendUnavailable("vllm is not answering its health checks")

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any], *,
                       cache_scope: str | None = None) -> Json:
        self._child_ready()
        return await self._upstream.generate(kind, body, cache_scope=cache_scope)

    async def stream(self, kind: GenerationKind, body: Mapping[str, Any], *,
                     cache_scope: str | None = None) -> AsyncIterator[Json]:
        # A generator: its failures arrive with the first chunk, where callers handle them.
        self._child_ready()
        chunks = self._upstream.stream(kind, body, cache_scope=cache_scope)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def embed(self, body: Mapping[str, Any], *, cache_scope: str | None = None) -> Json:
        self._child_ready()
        return await self._upstream.embed(body, cache_scope=cache_scope)
