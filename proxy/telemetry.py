"""Structured JSON logs whose schema cannot carry content.

An allow-list processor keeps only known, content-free fields and drops everything else, so a
careless ``log.info(..., body=...)`` loses the field instead of leaking it. String values are
also clipped and restricted to identifier-like text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["ALLOWED_FIELDS", "configure_logging", "drop_unknown_fields"]

ALLOWED_FIELDS = frozenset({
    "event", "level", "timestamp", "logger",
    "request_id", "tenant", "model", "backend", "retention_tier", "endpoint", "method",
    "status", "code", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "channel", "decision", "rules", "stream", "policy_digest", "leaf_index",
    "record_id", "host", "port", "engine", "provider", "platform", "count", "error_type",
    "backends", "models", "key_id", "reason", "data_dir", "log_id", "size",
})
# Identifier-ish values only: free text (which could be content) is replaced, not logged.
_SAFE = re.compile(r"^[A-Za-z0-9_.:/@+=,\- ]{0,160}$")


def _clean(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value if _SAFE.match(value) else "[redacted]"
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value][:32]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in list(value.items())[:32] if _SAFE.match(str(k))}
    return "[redacted]"


def drop_unknown_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: keep allow-listed fields with content-free values only."""
    return {k: (v if k == "event" else _clean(v)) for k, v in event_dict.items() if k in ALLOWED_FIELDS}


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
