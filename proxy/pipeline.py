"""The request pipeline every content endpoint goes through, in the order DESIGN.md fixes.

channel check → authenticate (key in the *inner* request) → route → policy decision →
durable intent record → backend → completion record. Each step fails closed: an error stops the
request before anything is forwarded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from litestar import Request

from audit import IDENTIFIER
from inference import ModelRoute
from proxy.errors import SealedChannelRequired
from proxy.gateway import sealed_channel
from proxy.telemetry import Metrics
from proxy.tenants import Tenant

__all__ = ["Admission", "CallContext", "Outcome", "ResponseCommitment", "model_endpoint"]

_log = structlog.get_logger("sealgate.request")
Channel = Literal["sealed", "plaintext"]
# A record's endpoint is an identifier of the record grammar (docs/protocol.md, "Records"). A
# path outside it (spaces, non-ASCII, over 128 characters) is recorded as this fixed label:
# no real path matches it, since every request path starts with "/".
_INVALID_PATH = ":invalid-path"
# The words of the OpenAI API's paths. A path is the client's text like a body is, and a
# segment of it can carry content (``/v1/files/<anything>``), so records, logs and metrics name
# the other segments (ids, or whatever a client wrote there) ``:id``; the policy still decides
# on the real path.
_API_WORDS = frozenset({
    "v1", "chat", "completions", "embeddings", "models", "responses", "input_items",
    "input_tokens", "cancel", "compact", "conversations", "items", "messages", "files",
    "content", "uploads", "parts", "complete", "fine_tuning", "jobs", "checkpoints",
    "permissions", "events", "pause", "resume", "alpha", "graders", "run", "validate", "batches",
    "evals", "runs", "output_items", "assistants", "threads", "steps", "submit_tool_outputs",
    "vector_stores", "file_batches", "search", "audio", "speech", "transcriptions",
    "translations", "voices", "images", "generations", "edits", "variations", "moderations",
    "realtime", "sessions", "transcription_sessions", "client_secrets", "calls", "containers",
    "videos", "remix", "organization", "projects", "usage", "costs", "admin_api_keys",
    "users", "invites", "audit_logs", "certificates", "chatkit",
})
_ID = ":id"


def _endpoint_label(path: str) -> str:
    """``path`` with every segment that is not a word of the API replaced by ``:id``, or
    ``:invalid-path`` where it does not fit a record (content-free either way)."""
    if not IDENTIFIER.fullmatch(path):
        return _INVALID_PATH
    return "/".join(part if not part or part in _API_WORDS else _ID for part in path.split("/"))


def model_endpoint(name: str) -> str:
    """The endpoint label of ``GET /v1/models/{name}`` for a *configured* model's name (the
    operator's text, not the client's, so it is named as it is)."""
    path = "/v1/models/" + name
    return path if IDENTIFIER.fullmatch(path) else "/v1/models/" + _ID


@dataclass(slots=True)
class CallContext:
    """What the pipeline knows about one request. Never holds content."""

    request_id: str
    path: str
    """The request path, for the policy decision only."""
    endpoint: str
    """The path as records, logs and metrics name it (``_endpoint_label``)."""
    method: str
    channel: Channel
    commitment_key: bytes | None
    started: float = field(default_factory=time.perf_counter)
    tenant: Tenant | None = None
    route: ModelRoute | None = None
    request_commitment: str | None = None
    logged: bool = False
    """Whether the request's log line was written (``Outcome.log``)."""

    @classmethod
    def begin(cls, request: Request[Any, Any, Any]) -> CallContext:
        marker = sealed_channel(request.scope)
        path = request.scope.get("root_path", "") + request.scope["path"]
        return cls(
            request_id="req_" + secrets.token_hex(12),
            path=path,
            endpoint=_endpoint_label(path),
            method=request.method,
            channel="sealed" if marker is not None else "plaintext",
            # Plaintext (development) requests commit under a random key nobody keeps, so
            # every record still binds the exact bytes without revealing anything.
            commitment_key=marker.commitment_key if marker else secrets.token_bytes(32),
        )

    def check_channel(self, allow_plaintext: bool) -> None:
        if self.channel == "plaintext" and not allow_plaintext:
            raise SealedChannelRequired(
                "this endpoint carries content and is served only through the sealed "
                "channel (Oblivious HTTP at /.well-known/ohttp-gateway)")

    def commit_request(self, body: bytes) -> None:
        if self.commitment_key is not None:
            self.request_commitment = _commit(self.commitment_key, body)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


def _commit(key: bytes, data: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


class ResponseCommitment:
    """HMAC over exactly the response bytes sent, fed as they go out (streaming included)."""

    def __init__(self, key: bytes | None) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256) if key is not None else None

    def update(self, data: bytes) -> bytes:
        if self._mac is not None:
            self._mac.update(data)
        return data

    def value(self) -> str | None:
        return None if self._mac is None else "hmac-sha256:" + self._mac.hexdigest()


@dataclass(slots=True)
class Admission:
    """The pipeline's go-ahead: obligations to apply and the intent receipt to return."""

    obligations: Mapping[str, Any] = field(default_factory=dict)
    decision: Any = None
    """The policy decision (``policy.Decision``) that admitted the request."""
    receipt: str | None = None
    intent_id: str | None = None


@dataclass(slots=True)
class Outcome:
    """How a forwarded request ended, for the completion record and the log line."""

    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    response_commitment: str | None = None
    aborted: str | None = None
    ttft_ms: float | None = None

    def log(self, ctx: CallContext, metrics: Metrics | None = None) -> None:
        ctx.logged = True
        if metrics is not None:
            metrics.observe(ctx.endpoint, ctx.route.name if ctx.route else None, ctx.channel,
                            self.status, ctx.elapsed_ms(), self.prompt_tokens,
                            self.completion_tokens)
        _log.info("request", request_id=ctx.request_id, endpoint=ctx.endpoint,
                  tenant=ctx.tenant.pseudonym if ctx.tenant else None,
                  model=ctx.route.name if ctx.route else None, channel=ctx.channel,
                  status=self.status, latency_ms=round(ctx.elapsed_ms(), 3),
                  ttft_ms=None if self.ttft_ms is None else round(self.ttft_ms, 3),
                  prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                  reason=self.aborted)
