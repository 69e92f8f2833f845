"""The OpenAI endpoints' logic: validate → pipeline → backend → OpenAI-shaped response."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Protocol
from urllib.parse import parse_qsl

import msgspec
import multipart
from litestar import Request, Response
from litestar.types import Receive

from inference import BackendRouter, GenerationKind, ModelNotFound, ModelRoute
from proxy.api.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    decode_request,
)
from proxy.errors import (
    ClientDisconnected,
    NotFound,
    RequestTooLarge,
    observe_errors,
    set_error_headers,
)
from proxy.pipeline import Admission, CallContext, Outcome, ResponseCommitment, model_endpoint
from proxy.streams import closing_stream
from proxy.telemetry import Metrics
from proxy.tenants import Lease, TenantLimiter, TenantLimitExceeded, TenantLimits, TenantStore

__all__ = ["Gate", "OpenAIService"]

_encode = msgspec.json.encode
_SCHEMAS: dict[GenerationKind, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    "chat": ChatCompletionRequest,
    "completions": CompletionRequest,
}
_OBJECTS = {"chat": ("chatcmpl-", "chat.completion"), "completions": ("cmpl-", "text_completion")}
# Request fields that steer the gateway or policy and are not forwarded to a backend.
_NOT_FORWARDED = ("metadata", "user", "safety_identifier", "prompt_cache_key",
                  "previous_response_id", "conversation")
# Completion records' abort reasons (docs/protocol.md); a backend error names its own when listed.
_ABORT_REASONS = frozenset({"client_disconnected", "upstream_truncated", "context_length_exceeded"})


class Gate(Protocol):
    """Policy decision and audit records around one forwarded request."""

    async def admit(self, ctx: CallContext, params: Mapping[str, Any]) -> Admission: ...

    async def deny_or_pass(self, ctx: CallContext, params: Mapping[str, Any]) -> None: ...

    async def finish(self, ctx: CallContext, admission: Admission, outcome: Outcome) -> None: ...


class OpenAIService:
    """Serves ``/v1/models``, chat, completions and embeddings through the pipeline."""

    def __init__(self, router: BackendRouter, tenants: TenantStore, gate: Gate | None, *,
                 allow_plaintext: bool, max_body_bytes: int = 1 << 20,
                 metrics: Metrics | None = None,
                 tenant_limits: Callable[[str], TenantLimits] | None = None) -> None:
        self.metrics = metrics
        self._router = router
        self._tenants = tenants
        self.limiter = TenantLimiter(0)
        self._tenant_limits = tenant_limits
        """A tenant's limits by tenant name; none without."""
        self.gate = gate
        self._allow_plaintext = allow_plaintext
        self._max_body = max_body_bytes
        self._created = int(time.time())
        self.stopping = False
        """The server is shutting down (``sealgate serve`` sets it on SIGTERM or SIGINT): a
        request cut off from now on is recorded as ``gateway_shutdown``, not as its client's."""
        # Cache scopes: one per tenant, keyed by a secret of this process, so that no one
        # who sees a scope (a vLLM server's cache_salt) can tell the tenant or forge another's.
        self._scope_key = secrets.token_bytes(32)

    async def _begin(self, request: Request[Any, Any, Any]) -> tuple[CallContext, bytes]:
        ctx = CallContext.begin(request)
        observe_errors(request.scope, partial(self._failed, ctx))
        set_error_headers(request.scope, _headers(ctx, None))
        ctx.check_channel(self._allow_plaintext)
        ctx.tenant = await self._tenants.resolve(request.headers.get("authorization"))
        body = await request.body()
        if len(body) > self._max_body:
            raise RequestTooLarge(f"the request body is larger than {self._max_body} bytes")
        ctx.commit_request(body)
        return ctx, body

    async def _admit(self, request: Request[Any, Any, Any], ctx: CallContext,
                     params: dict[str, Any]) -> Admission:
        admission = Admission() if self.gate is None else await self.gate.admit(ctx, params)
        set_error_headers(request.scope, _headers(ctx, admission))
        return admission

    def _failed(self, ctx: CallContext, status: int, code: str) -> None:
        """The request's error answer, logged and counted unless its end already was."""
        if not ctx.logged:
            Outcome(status, aborted=code).log(ctx, self.metrics)

    def _lease(self, ctx: CallContext) -> Lease:
        """The request's place among its tenant's requests in flight (429 past the limits)."""
        assert ctx.tenant is not None
        limits = self._tenant_limits(ctx.tenant.name) if self._tenant_limits else None
        try:
            return self.limiter.acquire(ctx.tenant.id, limits)
        except TenantLimitExceeded as exc:
            Outcome(exc.status, aborted=exc.code).log(ctx, self.metrics)
            raise

    def _output_limit(self, ctx: CallContext) -> int:
        """The output tokens charged to a request that set no limit and whose backend never
        counted them: its tenant's contract's ``max_tokens``, else ``DEFAULT_OUTPUT_ESTIMATE``."""
        assert ctx.tenant is not None
        limits = self._tenant_limits(ctx.tenant.name) if self._tenant_limits else None
        return (limits.max_tokens if limits else 0) or DEFAULT_OUTPUT_ESTIMATE

    def _cache_scope(self, ctx: CallContext) -> str | None:
        """Who may share cached prompt state with this request (``Backend``): its tenant."""
        if ctx.tenant is None:
            return None
        return hmac.new(self._scope_key, ctx.tenant.id.encode(), hashlib.sha256).hexdigest()

    async def _finish(self, ctx: CallContext, admission: Admission, outcome: Outcome,
                      lease: Lease | None = None, unreported: int = 0) -> None:
        """Log and record how the request ended; charge its tokens to its tenant: the backend's
        count, else ``unreported`` (an estimate, for a request whose client left first or whose
        backend answered without counting)."""
        if self.stopping and outcome.aborted in ("client_disconnected", "cancelled"):
            outcome.aborted = "gateway_shutdown"  # the server cut it off
        if lease is not None:
            reported = outcome.prompt_tokens + outcome.completion_tokens
            lease.charge(reported or unreported)
        outcome.log(ctx, self.metrics)
        if self.gate is not None:
            await self.gate.finish(ctx, admission, outcome)

    # -- models -------------------------------------------------------------------------------
    async def models(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """The models the tenant's contract lets it use (the policy refuses the others)."""
        ctx, _ = await self._decided(request)
        usable = self._usable(ctx)
        listing = {"object": "list",
                   "data": [self._model(r) for r in self._router.routes if usable(r.name)]}
        return Response(listing, headers=_headers(ctx, None))

    def _usable(self, ctx: CallContext) -> Callable[[str], bool]:
        assert ctx.tenant is not None
        if self._tenant_limits is None:
            return lambda _: True
        return self._tenant_limits(ctx.tenant.name).may_use

    async def model(self, request: Request[Any, Any, Any], model_id: str) -> Response[dict[str, Any]]:
        ctx, route = await self._decided(request, model_id)
        assert route is not None
        return Response(self._model(route), headers=_headers(ctx, None))

    async def _decided(self, request: Request[Any, Any, Any],
                       model_id: str | None = None) -> tuple[CallContext, ModelRoute | None]:
        """Authenticate, look the model up (404 if unknown), then let the policy decide (a
        denial is raised and recorded), then 404 for a model the tenant's contract does not
        list, as for one not served. Nothing is forwarded."""
        ctx, _ = await self._begin(request)
        lease = self._lease(ctx)  # within its tenant's limits, as every other request
        try:
            route = None if model_id is None else self._router.route(model_id)[0]
            if route is not None:
                ctx.endpoint = model_endpoint(route.name)
            if self.gate is not None:
                await self.gate.deny_or_pass(ctx, {})
            if route is not None and not self._usable(ctx)(route.name):
                raise ModelNotFound("the requested model does not exist")  # as for one not served
            Outcome(200).log(ctx, self.metrics)
            return ctx, route
        finally:
            lease.release()

    def _model(self, route: ModelRoute) -> dict[str, Any]:
        return {"id": route.name, "object": "model", "created": self._created,
                "owned_by": route.owned_by}

    # -- chat and text completions ------------------------------------------------------------
    async def generate(self, kind: GenerationKind, request: Request[Any, Any, Any]) -> Response[Any]:
        ctx, raw = await self._begin(request)
        lease = self._lease(ctx)
        streaming = False
        try:
            parsed = decode_request(raw, _SCHEMAS[kind])
            ctx.route, backend = self._router.route(parsed.model)
            params = msgspec.to_builtins(parsed)
            admission = await self._admit(request, ctx, params)
            body = _forward_body(params, ctx.route, admission)
            scope = self._cache_scope(ctx)
            prompt, limit = _estimate(raw, params)
            if not limit:  # charged the contract's limit if the backend never counts
                limit = self._output_limit(ctx)
            if parsed.stream:
                include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
                chunks = await self._first_chunk(request, ctx, admission, lease, prompt,
                                                 backend.stream(kind, body, cache_scope=scope))
                # The stream holds the lease from here, and its ``finally`` settles the request
                # (lease, tokens, completion record). Started here, so that ``finally`` runs
                # even if the response fails before its first byte: closed with the response.
                stream = self._stream(kind, ctx, admission, chunks, include_usage, lease, prompt)
                streaming = True
                return closing_stream(stream, first=await anext(stream), media_type="text/event-stream",
                                      headers={**_headers(ctx, admission), "Cache-Control": "no-store"})
            route = ctx.route
            return await self._whole(request, ctx, admission, lease, prompt + limit,
                                     backend.generate(kind, body, cache_scope=scope),
                                     lambda doc: _shape(doc, kind, route))
        finally:
            if not streaming:
                lease.release()

    async def _whole(self, request: Request[Any, Any, Any], ctx: CallContext,
                     admission: Admission, lease: Lease, unreported: int,
                     answer: Awaitable[dict[str, Any]],
                     shape: Callable[[dict[str, Any]], None]) -> Response[Any]:
        """A whole (non-streamed) answer. The completion record is written however it ends;
        a client that leaves first cancels the backend call. An answer the backend did not
        count (it left first, or the backend sent no ``usage``) is charged ``unreported``
        tokens, or such a backend would get around the tenant's token budget."""
        outcome, spent = Outcome(500, aborted="internal_error"), True
        try:
            async with _CancelOnDisconnect(request.receive):
                result = await answer
            shape(result)
            payload = _encode(result)
            usage = result.get("usage") or {}
            commitment = ResponseCommitment(ctx.commitment_key)
            commitment.update(payload)
            outcome = Outcome(200, usage.get("prompt_tokens", 0),
                              usage.get("completion_tokens", 0), commitment.value())
        except Exception as exc:
            outcome = _failed(exc)
            # A backend that may have generated (it timed out, or its answer was unreadable)
            # is charged like one whose client left; one that refused or was never reached not.
            spent = outcome.aborted == "client_disconnected" or getattr(exc, "spent", False)
            raise
        except asyncio.CancelledError:  # the server cancelled it (at shutdown): answered 503
            outcome = Outcome(503, aborted="cancelled")
            raise
        finally:
            await self._finish(ctx, admission, outcome, lease, unreported if spent else 0)
        return Response(payload, media_type="application/json", headers=_headers(ctx, admission))

    async def _first_chunk(self, request: Request[Any, Any, Any], ctx: CallContext,
                           admission: Admission, lease: Lease, prompt: int,
                           chunks: AsyncIterator[dict[str, Any]]
                           ) -> AsyncIterator[dict[str, Any]]:
        """Wait for the first chunk before answering, so a backend that is down gets a proper
        503 instead of a 200 stream that fails. A client that leaves meanwhile (queueing and
        prefill can take long) cancels the backend call, and the record says so. Chunks with
        neither choices nor usage (an upstream's prompt-filter results) send nothing: the wait
        goes on past them, under the same watch, and they are dropped, not kept (an upstream
        sending them without end would grow the gateway's memory without end)."""
        ahead: list[dict[str, Any]] = []
        try:
            async with _CancelOnDisconnect(request.receive):
                while not ahead:
                    chunk = await anext(chunks)
                    if chunk.get("choices") or chunk.get("usage"):
                        ahead.append(chunk)
        except StopAsyncIteration:
            return _prepend(ahead, chunks)
        except (Exception, asyncio.CancelledError) as exc:  # cancelled: by the server, at shutdown
            outcome = _failed(exc) if isinstance(exc, Exception) else Outcome(503, aborted="cancelled")
            try:
                await _aclose(chunks)
            finally:  # a client that left during the prefill is charged its prompt
                left = outcome.aborted == "client_disconnected"
                await self._finish(ctx, admission, outcome, lease, prompt if left else 0)
            raise
        return _prepend(ahead, chunks)

    async def _stream(self, kind: GenerationKind, ctx: CallContext, admission: Admission,
                      chunks: AsyncIterator[dict[str, Any]], include_usage: bool, lease: Lease,
                      prompt: int) -> AsyncGenerator[bytes, None]:
        assert ctx.route is not None
        commitment = ResponseCommitment(ctx.commitment_key)
        outcome = Outcome(200, response_commitment=None, aborted="client_disconnected")
        same: tuple[Any, Any] | None = None  # every chunk of a stream: one id, one created
        # Tokens to charge when the backend's usage never came (the client left first): the
        # prompt's estimate, and one per chunk sent.
        sent = 0
        try:
            async for chunk in chunks:
                if outcome.ttft_ms is None:
                    outcome.ttft_ms = ctx.elapsed_ms()
                usage = chunk.pop("usage", None)
                if usage:
                    outcome.prompt_tokens = usage.get("prompt_tokens", 0)
                    outcome.completion_tokens = usage.get("completion_tokens", 0)
                if include_usage:  # every chunk but the usage chunk says null, as OpenAI's do
                    chunk["usage"] = None
                sent += 1
                for part in _with_usage(chunk, usage if include_usage else None):
                    _shape(part, kind, ctx.route, chunk=True)
                    if same is None:
                        same = part["id"], part["created"]
                    part["id"], part["created"] = same
                    yield commitment.update(b"data: " + _encode(part) + b"\n\n")
            yield commitment.update(b"data: [DONE]\n\n")
            outcome.aborted = None
        except Exception as exc:
            outcome.status, outcome.aborted = 502, _failed(exc).aborted
            code = getattr(exc, "code", None)
            error = {"error": {"message": "the backend failed mid-stream", "type": "api_error",
                               "param": None,
                               "code": code if isinstance(code, str) else "internal_error"}}
            yield commitment.update(b"data: " + _encode(error) + b"\n\n")
        finally:
            try:
                await _aclose(chunks)
            finally:
                lease.release()
                outcome.response_commitment = commitment.value()
                await self._finish(ctx, admission, outcome, lease, prompt + sent)

    # -- endpoints this gateway does not serve ---------------------------------------------------
    async def refuse(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Any other ``/v1`` endpoint: the policy decides (training-shaped endpoints are
        denied with their rule id and recorded); anything it allows is still not served here."""
        ctx, raw = await self._begin(request)
        lease = self._lease(ctx)  # each decision is a signed record: within the tenant's limits
        try:
            params: dict[str, Any] = {}
            if request.method in ("POST", "PUT", "PATCH"):
                params = _body_fields(raw, request.headers.get("content-type", ""))
            # The OpenAI API reads a file's ``purpose`` from its form or JSON body; the query's
            # counts only where the body has none (a query could not relabel a fine-tune upload).
            if "purpose" in request.query_params and "purpose" not in params:
                params["purpose"] = request.query_params["purpose"]
            # A configured model it names is decided with its route (tier, backend), so an
            # endpoint the policy allows is answered as not served here, not as a tier denial.
            model = params.get("model")
            ctx.route = self._router.names.get(model) if isinstance(model, str) else None
            if self.gate is not None:
                await self.gate.deny_or_pass(ctx, params)
        finally:
            lease.release()
        raise NotFound("this endpoint is not served by this gateway", code="unsupported_endpoint")

    # -- embeddings ---------------------------------------------------------------------------
    async def embeddings(self, request: Request[Any, Any, Any]) -> Response[Any]:
        ctx, raw = await self._begin(request)
        lease = self._lease(ctx)
        try:
            parsed = decode_request(raw, EmbeddingRequest)
            ctx.route, backend = self._router.route(parsed.model)
            params = msgspec.to_builtins(parsed)
            admission = await self._admit(request, ctx, params)
            body = _forward_body(params, ctx.route, admission)
            model = ctx.route.name

            def shape(result: dict[str, Any]) -> None:
                result["object"] = "list"
                result["model"] = model
                result.setdefault("usage", {"prompt_tokens": 0, "total_tokens": 0})
                for position, item in enumerate(result["data"]):  # checked: a list of objects
                    item.setdefault("object", "embedding")
                    item.setdefault("index", position)

            return await self._whole(request, ctx, admission, lease, _estimate(raw, params)[0],
                                     backend.embed(body, cache_scope=self._cache_scope(ctx)), shape)
        finally:
            lease.release()


# Output tokens charged to a request without a limit of its own, when its tenant's contract sets
# none either and its backend never counted: the context of a small model.
DEFAULT_OUTPUT_ESTIMATE = 4096


def _estimate(raw: bytes, params: dict[str, Any]) -> tuple[int, int]:
    """Tokens a request may use, for a token budget its backend never reported on (its client
    left first): the prompt (about four bytes of request body a token) and the output limit it
    asked for (0 without one)."""
    limits = [v for k in ("max_tokens", "max_completion_tokens")
              if isinstance(v := params.get(k), int) and v > 0]
    return len(raw) // 4, max(limits, default=0)


def _body_fields(raw: bytes, content_type: str) -> dict[str, Any]:
    """Policy-relevant view of a body we will not forward: a JSON object, or the ``purpose``
    field of a form (file uploads are multipart); else nothing. Parsed in memory only."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        purpose = _form_field(raw, content_type, media, "purpose")
        return {} if purpose is None else {"purpose": purpose}
    try:
        doc = msgspec.json.decode(raw) if raw else {}
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


# Parts of a form read for the policy: an upload names its purpose before its file, and a form
# of more parts is read no further (the request is refused either way; only the rule id differs).
_FORM_PARTS = 64


def _form_field(raw: bytes, content_type: str, media: str, name: str) -> str | None:
    """The first text field ``name`` of a form body (file parts are skipped), or ``None``.
    Multipart bodies go through a streaming parser with bounded parts and headers: linear in
    the body's size, whatever a client nests or repeats in it."""
    if media == "application/x-www-form-urlencoded":
        # The first parts only, as for multipart (parse_qsl's own cap raises instead).
        fields = raw.decode("utf-8", "replace").split("&", _FORM_PARTS)[:_FORM_PARTS]
        found = [v for k, v in parse_qsl("&".join(fields)) if k == name]
        return found[0] if found else None
    boundary = multipart.parse_options_header(content_type)[1].get("boundary")
    if not boundary:
        return None
    parser = multipart.PushMultipartParser(boundary, max_segment_count=_FORM_PARTS)
    wanted, value = False, bytearray()
    try:
        for chunk in (raw, b""):  # the empty chunk ends the body
            for event in parser.parse(chunk):
                if isinstance(event, multipart.MultipartSegment):
                    wanted = event.name == name and event.filename is None
                elif event is None:  # the end of a part
                    if wanted:
                        return value.decode("utf-8", "replace")
                elif wanted:
                    value += event
    except (multipart.ParserError, multipart.ParserLimitReached, ValueError, UnicodeError):
        return None
    finally:
        parser.close(check_complete=False)
    return None


def _forward_body(params: dict[str, Any], route: ModelRoute, admission: Admission) -> dict[str, Any]:
    body = {k: v for k, v in params.items() if k not in _NOT_FORWARDED}
    body.update(admission.obligations.get("set_params", {}))
    body["model"] = route.upstream_model or route.name
    if body.get("stream"):
        body["stream_options"] = {"include_usage": True}  # token counts for the record
    return body


def _headers(ctx: CallContext, admission: Admission | None) -> dict[str, str]:
    headers = {"x-request-id": ctx.request_id, "sealgate-channel": ctx.channel}
    if admission is not None and admission.receipt is not None:
        headers["sealgate-receipt"] = admission.receipt
    return headers


def _shape(doc: dict[str, Any], kind: GenerationKind, route: ModelRoute, *, chunk: bool = False) -> None:
    """Make a backend document match the OpenAI shape exactly (ids, object, model, created)."""
    prefix, obj = _OBJECTS[kind]
    if not str(doc.get("id", "")).startswith(prefix):
        doc["id"] = prefix + secrets.token_hex(12)
    doc["object"] = obj + ".chunk" if chunk and kind == "chat" else obj
    doc["model"] = route.name
    doc.setdefault("created", int(time.time()))
    for field in ("timings", "system_fingerprint"):
        doc.pop(field, None)
    for position, choice in enumerate(doc.get("choices") or ()):
        choice.setdefault("index", position)  # required in whole responses and chunks alike
        if not chunk:  # required in whole responses (nullable), optional in chunks
            choice.setdefault("logprobs", None)
        logprobs = choice.get("logprobs")
        if kind == "chat" and isinstance(logprobs, dict):
            logprobs.setdefault("refusal", None)  # required beside content
        message = choice.get("message")
        if kind == "chat" and not chunk and isinstance(message, dict):  # checked as such
            message.setdefault("role", "assistant")
            message.setdefault("refusal", None)
            message.setdefault("content", None)


def _with_usage(chunk: dict[str, Any], usage: Any) -> list[dict[str, Any]]:
    """The chunks to send for one backend chunk whose ``usage`` was taken off: the chunk if
    it has choices, and the usage (when asked for) on a chunk of its own with no choices, as
    the OpenAI API sends it; some backends put it on their last content chunk."""
    parts = [chunk] if chunk.get("choices") else []
    if usage:
        parts.append({**{k: v for k, v in chunk.items() if k != "choices"},
                      "choices": [], "usage": usage})
    return parts


async def _prepend(ahead: list[dict[str, Any]], rest: AsyncIterator[dict[str, Any]]
                   ) -> AsyncIterator[dict[str, Any]]:
    try:
        for chunk in ahead:
            yield chunk
        async for chunk in rest:
            yield chunk
    finally:
        await _aclose(rest)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _failed(exc: BaseException) -> Outcome:
    """The completion outcome of a request that failed after admission: the status the client
    is answered with (a backend error's own) and an abort reason."""
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    if not isinstance(status, int) or not 400 <= status <= 599:
        return Outcome(500, aborted="internal_error")
    reason = code if code in _ABORT_REASONS else "backend_error"
    return Outcome(status, aborted=reason)


class _CancelOnDisconnect:
    """``async with``: cancel the enclosed await when the client disconnects (ASGI
    ``http.disconnect``) so the backend stops generating, and raise :class:`ClientDisconnected`
    instead. A class, not a generator context manager: this is on every request's path.

    The watcher cancels the caller's own task (an extra task for the answer costs about as much
    as the rest of this). That cannot strike later code, such as writing the completion
    record: between the enclosed await returning and ``__aexit__`` cancelling the watcher there
    is no await, and a watcher cancelled while already scheduled never runs its next line.
    """

    __slots__ = ("_gone", "_receive", "_task", "_watcher")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = False

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        self._task.cancel()

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._watcher = asyncio.create_task(self._watch())

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        self._watcher.cancel()
        if not self._gone:
            return
        # Withdraw our cancellation; unless the server cancelled too, the caller sees a
        # disconnect instead of a cancel.
        if self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise ClientDisconnected("the client closed the connection") from None
