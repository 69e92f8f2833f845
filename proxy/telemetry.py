"""Structured JSON logs whose schema cannot carry content.

An allow-list processor keeps only known, content-free fields and drops everything else, so a
careless ``log.info(..., body=...)`` loses the field instead of leaking it. String values are
also clipped and restricted to identifier-like text with no spaces (prose, which could be
content, cannot pass), and the event name itself must be a snake_case word.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import re
import resource
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["ALLOWED_FIELDS", "Metrics", "configure_logging", "detach_native_stderr", "drop_unknown_fields",
           "forbid_core_dumps"]

ALLOWED_FIELDS = frozenset({
    "event", "level", "timestamp", "logger",
    "request_id", "tenant", "model", "backend", "retention_tier", "endpoint", "method",
    "status", "code", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "channel", "decision", "rules", "stream", "policy_digest", "leaf_index",
    "record_id", "host", "port", "engine", "provider", "platform", "count", "error_type",
    "backends", "models", "key_id", "reason", "data_dir", "log_id", "size",
})
# Identifier-ish values only: free text (which could be content) is replaced, not logged.
_SAFE = re.compile(r"[A-Za-z0-9_.:/@+=,\-]{0,160}")
_EVENT = re.compile(r"[a-z][a-z0-9_.]{0,63}")


def _clean(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value if _SAFE.fullmatch(value) else "[redacted]"
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value][:32]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in list(value.items())[:32] if _SAFE.fullmatch(str(k))}
    return "[redacted]"


def drop_unknown_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: keep allow-listed fields with content-free values only; an event
    name that is not one snake_case word (an f-string, a dict) is replaced too."""
    return {k: (_event(v) if k == "event" else _clean(v))
            for k, v in event_dict.items() if k in ALLOWED_FIELDS}


def _event(value: Any) -> str:
    return value if isinstance(value, str) and _EVENT.fullmatch(value) else "[redacted]"


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """JSON lines on stderr (or ``stream``); idempotent."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_unknown_fields,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def detach_native_stderr() -> None:
    """Point file descriptor 2 at /dev/null, keeping Python's own output (these JSON logs,
    start-up errors, warnings, a fatal error's traceback) on the original stream.

    Native code in the server process writes its diagnostics straight to descriptor 2, past
    every processor here, and some of them quote the request: the in-process model's grammar
    converter prints a JSON schema ``pattern`` it cannot honour, verbatim. ``sys.stderr`` moves
    to a duplicate of the original descriptor first, so only native writes are discarded. A
    no-op when ``sys.stderr`` is not descriptor 2 (output captured by a test harness)."""
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    kept = os.dup(2)  # not inherited by child processes
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
    finally:
        os.close(null)
    sys.stderr = os.fdopen(kept, "w", buffering=1, encoding=sys.stderr.encoding,
                           errors="backslashreplace")
    faulthandler.enable(sys.stderr)  # code locations only, never data


_PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> None:
    """No core file of the server, nor of the children it starts (a supervised vLLM): a crash
    would write the prompts and completions in memory to disk. The core size limit is 0, soft
    and hard (children inherit it), and the process is not dumpable (Linux: no core file
    whatever the limit or ``core_pattern`` says, and no ``ptrace`` attach by another process
    of the same user)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass  # already lower than the caller may raise it: 0 is the floor anyway
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


_MODEL_PATH = "/v1/models/"


class Metrics:
    """Content-free counters in the Prometheus text format (``GET /metrics``).

    Labels come only from closed sets (configured model names, known endpoints, status
    codes, channel), so no request value can appear in a label.
    """

    _ENDPOINTS = frozenset({"/v1/models", "/v1/models/{model}", "/v1/chat/completions",
                            "/v1/completions", "/v1/embeddings"})

    def __init__(self, models: frozenset[str]) -> None:
        self._models = models
        self._requests: dict[tuple[str, str, str, str], int] = {}
        self._latency_sum: dict[str, float] = {}
        self._latency_count: dict[str, int] = {}
        self._tokens: dict[tuple[str, str], int] = {}

    def observe(self, endpoint: str, model: str | None, channel: str, status: int,
                latency_ms: float, prompt_tokens: int, completion_tokens: int) -> None:
        if endpoint.startswith(_MODEL_PATH):  # GET /v1/models/{id}: one label, the model its own
            model, endpoint = model or endpoint[len(_MODEL_PATH):], _MODEL_PATH + "{model}"
        endpoint = endpoint if endpoint in self._ENDPOINTS else "other"
        model = model if model in self._models else "none"
        key = (endpoint, model, channel, str(status))
        self._requests[key] = self._requests.get(key, 0) + 1
        self._latency_sum[endpoint] = self._latency_sum.get(endpoint, 0.0) + latency_ms / 1000
        self._latency_count[endpoint] = self._latency_count.get(endpoint, 0) + 1
        for kind, count in (("prompt", prompt_tokens), ("completion", completion_tokens)):
            self._tokens[(model, kind)] = self._tokens.get((model, kind), 0) + count

    def render(self) -> str:
        lines = ["# HELP sealgate_requests_total Requests by endpoint, model, channel and status.",
                 "# TYPE sealgate_requests_total counter"]
        for (endpoint, model, channel, status), n in sorted(self._requests.items()):
            lines.append(f'sealgate_requests_total{{endpoint="{endpoint}",model="{model}",'
                         f'channel="{channel}",status="{status}"}} {n}')
        lines += ["# HELP sealgate_request_seconds Request latency in the gateway.",
                  "# TYPE sealgate_request_seconds summary"]
        for endpoint in sorted(self._latency_count):
            lines.append(f'sealgate_request_seconds_sum{{endpoint="{endpoint}"}} '
                         f"{self._latency_sum[endpoint]:.6f}")
            lines.append(f'sealgate_request_seconds_count{{endpoint="{endpoint}"}} '
                         f"{self._latency_count[endpoint]}")
        lines += ["# HELP sealgate_tokens_total Tokens by model and kind.",
                  "# TYPE sealgate_tokens_total counter"]
        for (model, kind), n in sorted(self._tokens.items()):
            lines.append(f'sealgate_tokens_total{{model="{model}",kind="{kind}"}} {n}')
        return "\n".join(lines) + "\n"
