"""The embedded llama.cpp backend with the real SmolLM2 model: requests the core cannot serve
are a 400 naming the parameter (never a 500, a 503, or a silently dropped parameter), a prompt
that does not fit the context with its output is a 400 ``context_length_exceeded``, an engine
fault stays a 5xx, error messages never echo request content, and a whole (non-streamed)
answer stops generating when its caller leaves."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference import BackendRejected, BackendUnavailable, LlamaCppBackend
from tests.conftest import need
from tests.integration.conftest import request_counts, request_log, request_records
from tests.integration.core_counter import CoreCall, counting, counting_env, gateway_calls, until
from tests.server import Gateway, start_gateway

pytestmark = pytest.mark.timeout(300)

CANARY = "CANARY" + secrets.token_hex(8)
MODEL = "SmolLM2-135M-Instruct"
# One slot: a generation that goes on after its client left makes the next request wait.
CONFIG = f"""allow_plaintext = true
[backends.local]
type = "llamacpp"
n_ctx = 2048
n_parallel = 1
[models."{MODEL}"]
backend = "local"
retention_tier = "attested-zero"
"""
HI = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
# A story the model keeps writing to max_tokens (seeded), as in the review's reproduction.
LONG = {"model": MODEL, "max_tokens": 1500, "temperature": 1.0, "seed": 1,
        "prompt": "Chapter 1.\n\nThe long, long story of the kingdom begins"}

# (content part, message) for every part type the core cannot take.
UNSERVABLE_PARTS = {
    "image": ({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{CANARY}"}},
              "image input"),
    "audio": ({"type": "input_audio", "input_audio": {"data": CANARY, "format": "wav"}},
              "audio input"),
    "file": ({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{CANARY}",
                                       "filename": f"{CANARY}.pdf"}}, "file input"),
}
# (path, body, param) for each request whose prompt, with the output it asks for, does not fit
# the one slot's context (2048 tokens): too long alone, or leaving too little room for its output.
LONG_PROMPT = f"{CANARY} " * 400  # over 4,000 tokens
TOO_LONG = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG_PROMPT}]},
             "messages"),
    "chat-output": ("/v1/chat/completions", {"messages": [{"role": "user", "content": CANARY}],
                                             "max_completion_tokens": 2040}, "messages"),
    "completions": ("/v1/completions", {"prompt": LONG_PROMPT}, "prompt"),
    "completions-output": ("/v1/completions", {"prompt": CANARY, "max_tokens": 2047}, "prompt"),
}
# (path, body, param) for each parameter the core would ignore.
UNSUPPORTED_PARAMETERS = {
    "dimensions": ("/v1/embeddings", {"input": CANARY, "dimensions": 8}, "dimensions"),
    "suffix": ("/v1/completions", {"prompt": CANARY, "suffix": CANARY}, "suffix"),
    "echo-token-ids": ("/v1/completions", {"prompt": [1, 2, 3], "echo": True}, "echo"),
    "echo-logprobs": ("/v1/completions", {"prompt": CANARY, "echo": True, "logprobs": 1}, "echo"),
    "tools-required": ("/v1/chat/completions", {"messages": [{"role": "user", "content": CANARY}],
                                                "tools": TOOLS, "tool_choice": "required"}, "tools"),
    "tools-auto": ("/v1/chat/completions", {"messages": [{"role": "user", "content": CANARY}],
                                            "tools": TOOLS}, "tools"),
}


# -- the backend in this process (`one_slot`, `two_slots`: tests/integration/conftest.py) ---------------
def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_past_prompts_are_not_cached_and_memory_stays_flat(one_slot: LlamaCppBackend) -> None:
    """llama.cpp's host-memory prompt cache (8 GiB by default) kept every past prompt's KV
    state, every tenant's, after its request ended: about 230 KB more per completion."""
    need(Path("/proc/self/status").exists(), "needs /proc (Linux) to read this process's memory")

    async def completions(first: int, count: int) -> None:
        for i in range(first, first + count):
            body = {"model": MODEL, "max_tokens": 4, "prompt": f"Item {i}: the number {i * 7}"}
            await one_slot.generate("completions", body)

    asyncio.run(completions(0, 20))
    before = _rss_mb()
    asyncio.run(completions(20, 150))
    assert _rss_mb() - before < 10  # ~35 MB with the cache on


# A prompt long enough that reusing its cached prefix is unmistakable (~450 tokens).
MEMO = "Summarise this memo. " + " ".join(f"clause{i}" for i in range(150))


def _cached_tokens(answer: dict[str, Any]) -> int:
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def test_cached_prompts_are_reused_within_their_scope_only(two_slots: LlamaCppBackend) -> None:
    """llama.cpp reuses whatever prefix a slot's KV cache holds, and says so in the answer's
    timing and ``cached_tokens``: one tenant could learn what another's prompts begin with.
    A call reuses a slot's cache only when the slot last served its own scope."""
    body = {"model": MODEL, "prompt": MEMO, "max_tokens": 1}

    async def cached(scope: str | None, stream: bool = False) -> int:
        if not stream:
            return _cached_tokens(await two_slots.generate("completions", body,
                                                           cache_scope=scope))
        chunks = [c async for c in two_slots.stream(
            "completions", {**body, "stream_options": {"include_usage": True}}, cache_scope=scope)]
        return _cached_tokens(chunks[-1])

    async def scenario() -> list[int]:
        return [await cached("tenant-a"), await cached("tenant-b"),  # the same prompt, apart
                await cached("tenant-a"), await cached("tenant-b", stream=True),
                await cached(None), await cached(None),  # no scope: shares with no one
                await cached("tenant-a"),  # its slot went to the scopeless calls
                await cached("tenant-c")]  # the slot tenant-b left: not reused

    first_a, first_b, again_a, again_b, none_1, none_2, later_a, first_c = asyncio.run(scenario())
    assert first_b == 0 and first_c == 0 and none_1 == 0 and none_2 == 0 and later_a == 0
    assert again_a > 400 and again_b > 400  # within a tenant the prefix is still reused
    assert first_a == 0  # nothing here before


class FaultInjectingServer:
    """Fault injection only: the real core, except that generation calls raise ``fault``."""

    def __init__(self, inner: Any, fault: Exception) -> None:
        self._inner = inner
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def handle_chat_completions(self, *args: Any) -> Any:
        raise self._fault


async def _streamed(model: LlamaCppBackend, kind: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in model.stream(kind, body)]


def test_whole_answer_is_the_stream_assembled(one_slot: LlamaCppBackend) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 8, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    whole = asyncio.run(one_slot.generate("chat", body))
    chunks = asyncio.run(_streamed(one_slot, "chat", body))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert whole["object"] == "chat.completion" and whole["model"] == MODEL
    choice = whole["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": streamed} and streamed
    assert choice["finish_reason"] in ("stop", "length")
    usage = whole["usage"]
    assert len(choice["logprobs"]["content"]) == usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completion_batch_has_every_choice_and_all_tokens_counted(one_slot: LlamaCppBackend) -> None:
    prompts = ["Once upon a time", "Hello"]
    single = [asyncio.run(one_slot.generate("completions", {"model": MODEL, "prompt": p,
                                                           "max_tokens": 3, "temperature": 0}))
              for p in prompts]
    batch = asyncio.run(one_slot.generate("completions", {"model": MODEL, "prompt": prompts,
                                                         "max_tokens": 3, "temperature": 0}))
    assert [c["index"] for c in batch["choices"]] == [0, 1]
    assert [c["text"] for c in batch["choices"]] == [s["choices"][0]["text"] for s in single]
    for field in ("prompt_tokens", "completion_tokens"):
        assert batch["usage"][field] == sum(s["usage"][field] for s in single)
    chunks = asyncio.run(_streamed(one_slot, "completions", {
        "model": MODEL, "prompt": prompts, "max_tokens": 3, "temperature": 0,
        "stream_options": {"include_usage": True}}))
    assert [c for c in chunks if "usage" in c] == [chunks[-1]]  # one usage chunk, at the end
    for field in ("prompt_tokens", "completion_tokens"):
        assert chunks[-1]["usage"][field] == batch["usage"][field]


def test_echo_puts_each_text_prompt_before_its_completion(one_slot: LlamaCppBackend) -> None:
    body = {"model": MODEL, "prompt": ["Once upon a time", "Hello"], "max_tokens": 3,
            "temperature": 0}
    plain = asyncio.run(one_slot.generate("completions", body))
    echoed = asyncio.run(one_slot.generate("completions", body | {"echo": True}))
    assert [c["text"] for c in echoed["choices"]] == [
        p + c["text"] for p, c in zip(body["prompt"], plain["choices"], strict=True)]
    chunks = asyncio.run(_streamed(one_slot, "completions", body | {"echo": True}))
    for index, choice in enumerate(echoed["choices"]):
        parts = [c["text"] for chunk in chunks for c in chunk["choices"] if c["index"] == index]
        assert "".join(parts) == choice["text"]


def test_cancelled_whole_answer_stops_generating(one_slot: LlamaCppBackend) -> None:
    """Cancelled once its first token is out, a whole answer's call to the core returns at
    once, unfinished: the slot is free when the cancellation is through."""
    async def run() -> list[CoreCall]:
        with counting(one_slot) as core:
            # ignore_eos: the model cannot end on its own, only the cancellation stops it.
            task = asyncio.create_task(one_slot.generate("completions", LONG | {"ignore_eos": True}))
            await until(lambda: core.calls and core.calls[0].text_chunks, "first token")
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            (left,) = core.calls
            assert left.returned  # the core's call is over: the slot is free
            answer = await one_slot.generate("completions",
                                             {"model": MODEL, "prompt": "Hi", "max_tokens": 2})
            assert answer["usage"]["completion_tokens"] == 2
            return core.calls

    left, after = asyncio.run(run())
    # Run on, it would have ended with "length" after all 1500 tokens, on any machine.
    assert left.finish_reason is None and left.text_chunks < LONG["max_tokens"], left
    assert after.returned and after.finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_engine_fault_stays_a_server_error(one_slot: LlamaCppBackend, stream: bool) -> None:
    real = one_slot._server
    one_slot._server = FaultInjectingServer(real, RuntimeError(f"engine crashed at {CANARY}"))
    body = {"model": MODEL, "messages": HI, "max_tokens": 2}
    try:
        with pytest.raises(BackendUnavailable) as caught:
            asyncio.run(_streamed(one_slot, "chat", body) if stream else one_slot.generate("chat", body))
    finally:
        one_slot._server = real
    assert caught.value.status >= 500 and CANARY not in str(caught.value)
    assert "RuntimeError" not in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_and_output_past_the_context_are_refused(one_slot: LlamaCppBackend,
                                                        stream: bool) -> None:
    """The core refuses a prompt longer than the context; one that fits alone but leaves too
    little room for the output asked for would be evaluated and cut short at the context's end
    (``finish_reason: length``): it is stopped before it generates, and refused the same way."""
    plain = {"model": MODEL, "messages": [{"role": "user", "content": CANARY}], "max_tokens": 1}
    prompt = asyncio.run(one_slot.generate("chat", plain))["usage"]["prompt_tokens"]

    async def first_chunk(body: dict[str, Any]) -> dict[str, Any]:
        chunks = one_slot.stream("chat", body)
        try:
            return await anext(chunks)
        finally:
            await chunks.aclose()

    # Exactly the context: served (the core stops there at the latest).
    assert asyncio.run(first_chunk({**plain, "max_tokens": 2048 - prompt}))["choices"]
    # One token more, as max_tokens or as max_completion_tokens (which the core takes first).
    for body in ({**plain, "max_tokens": 2049 - prompt},
                 {**plain, "max_tokens": 5, "max_completion_tokens": 2049 - prompt}):
        with pytest.raises(BackendRejected) as caught:
            asyncio.run(_streamed(one_slot, "chat", body) if stream else one_slot.generate("chat", body))
        assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
        assert str(caught.value) == (
            "context_length_exceeded: this request needs 2049 tokens but the model holds at most "
            f"2048 ({prompt} in the messages, {2049 - prompt} for the completion)")


def test_dimensions_of_the_model_are_honoured(one_slot: LlamaCppBackend) -> None:
    native = len(asyncio.run(one_slot.embed({"model": MODEL, "input": "x"}))["data"][0]["embedding"])
    result = asyncio.run(one_slot.embed({"model": MODEL, "input": "x", "dimensions": native}))
    assert len(result["data"][0]["embedding"]) == native
    with pytest.raises(BackendRejected) as caught:
        asyncio.run(one_slot.embed({"model": MODEL, "input": "x", "dimensions": native - 1}))
    assert caught.value.param == "dimensions"


def test_best_of_above_one_is_refused(one_slot: LlamaCppBackend) -> None:
    # Not reachable through the gateway under the default policy (SG-TOKENS-002 counts it).
    body = {"model": MODEL, "prompt": CANARY, "max_tokens": 2, "best_of": 2}
    with pytest.raises(BackendRejected) as caught:
        asyncio.run(one_slot.generate("completions", body))
    assert caught.value.param == "best_of" and CANARY not in str(caught.value)


# -- through the gateway -------------------------------------------------------------------------
def test_one_tenant_never_reuses_another_tenants_prompt(llama_gateway: Gateway, key: str) -> None:
    """Through the gateway (one slot): the tenant's own repeated prompt is served from the
    cache, and the same prompt from another tenant right after is evaluated in full."""
    other = llama_gateway.new_key("llamacpp-other")
    body = {"prompt": MEMO, "max_tokens": 1}
    answers = [_post(llama_gateway, k, "/v1/completions", body) for k in (key, key, other, key)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    cached = [_cached_tokens(a.json()) for a in answers]
    assert cached[1] > 400 and cached[2] == 0 and cached[3] == 0, cached
@pytest.fixture(scope="module")
def core_calls(workdir: Path) -> Path:
    """Where the gateway's CountingCore (measurement tool) writes the calls to its model."""
    return workdir / f"llamacpp-core-calls-{secrets.token_hex(4)}.jsonl"


@pytest.fixture(scope="module")
def llama_gateway(workdir: Path, core_calls: Path) -> Iterator[Gateway]:
    gw = start_gateway(workdir, CONFIG, extra_env=counting_env(core_calls))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(llama_gateway: Gateway) -> str:
    return llama_gateway.new_key("llamacpp")


def _post(gw: Gateway, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    defaults = {"model": MODEL} if path == "/v1/embeddings" else {"model": MODEL, "max_tokens": 4}
    return httpx.post(f"{gw.url}{path}", json=defaults | body, timeout=120,
                      headers={"Authorization": f"Bearer {key}"})


def _refused(gw: Gateway, response: httpx.Response, param: str) -> str:
    """The 400 envelope's message, checked: the parameter named, no content, no retry hint."""
    assert response.status_code == 400, response.text
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "upstream_rejected" and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert CANARY not in response.text and CANARY not in gw.output()
    assert "Traceback" not in gw.output() and "unhandled_error" not in gw.output()
    return str(error["message"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("part", sorted(UNSERVABLE_PARTS))
def test_unservable_content_part_is_refused(llama_gateway: Gateway, key: str, part: str,
                                            stream: bool) -> None:
    content, what = UNSERVABLE_PARTS[part]
    messages = [{"role": "user", "content": [{"type": "text", "text": CANARY}, content]}]
    response = _post(llama_gateway, key, "/v1/chat/completions",
                     {"messages": messages, "stream": stream})
    assert _refused(llama_gateway, response, "messages[0].content[1]") == (
        f"the model's backend does not support {what}")


@pytest.mark.parametrize("stream", [False, True])
def test_uncompilable_json_schema_is_refused(llama_gateway: Gateway, key: str,
                                             stream: bool) -> None:
    schema = {"type": CANARY, "description": CANARY}
    body = {"messages": HI, "stream": stream,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}
    response = _post(llama_gateway, key, "/v1/chat/completions", body)
    _refused(llama_gateway, response, "response_format")


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": f"{CANARY}-[0-9]{{4}}"},  # not anchored: written to stderr
    {"type": "string", "minLength": 3, "maxLength": 1},  # took over 20 GB of memory
    {"type": "string", "maxLength": 200_000},
    {"type": "array", "items": {"type": "integer"}, "minItems": 100_000},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "^a{1,100000}$"}}},
    {"type": "integer", "minimum": 9223372036854775807},  # took over 14 GB of memory
    {"type": "integer", "maximum": -1e17},
    {"type": "integer", "exclusiveMinimum": 10**16},
    {"type": "integer", "minimum": 5, "maximum": 3},  # no grammar: a 500 from the model
    {"type": ["integer", "null"], "minimum": 1.5, "maximum": 1.7},
    {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4},
    {"type": "string", "pattern": "^a{" + "9" * 5000 + "}$"},  # past int()'s digit limit: a 500
    {"type": "string", "pattern": "^\\u0000$"},  # generation fails on NUL: a 503, or mid-stream
    {"type": "string", "pattern": "^[\\x00]$"},
    {"type": "string", "pattern": "^\\U00000000$"},
    {"type": "string", "pattern": f"^{CANARY}\x00$"},  # a raw NUL: the grammar went to stderr
], ids=["unanchored-pattern", "min-above-max", "long-string", "long-array", "long-pattern",
        "huge-minimum", "huge-negative-maximum", "huge-exclusive-minimum", "empty-range",
        "empty-fractional-range", "empty-exclusive-range", "huge-quantifier", "nul-escape",
        "nul-class", "nul-long-escape", "nul-raw"])
def test_json_schemas_the_grammar_converter_mishandles_are_refused(
        llama_gateway: Gateway, key: str, schema: dict[str, Any]) -> None:
    """The core's schema-to-grammar converter prints an unanchored pattern verbatim to stderr
    (request text in the logs) and then ignores it, and expands repetition bounds into
    grammar rules (a minimum above the maximum underflowed into gigabytes): refused first."""
    body = {"messages": HI,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}
    _refused(llama_gateway, _post(llama_gateway, key, "/v1/chat/completions", body), "response_format")
    assert "JSON schema conversion" not in llama_gateway.output()
    anchored = {"type": "string", "pattern": "^[a-z]{1,8}$", "maxLength": 8}
    # Classes that merely include NUL ("no control characters") are served.
    printable = {"type": "string", "pattern": "^[^\\x00-\\x1F]{1,8}$", "maxLength": 8}
    # Bounds that leave an integer, and a property that is only called "minimum".
    bounded = {"type": "object", "required": ["minimum"], "properties": {
        "minimum": {"type": "integer", "exclusiveMinimum": 0.5, "maximum": 9}}}
    for fine in (anchored, bounded, printable):
        body["response_format"]["json_schema"]["schema"] = fine
        served = _post(llama_gateway, key, "/v1/chat/completions", body)
        assert served.status_code == 200, served.text


@pytest.mark.parametrize("pattern", [
    f"^{CANARY}(?<=x)$", f"^{CANARY}\\p{{L}}$", f"^[[:alpha:]]{CANARY}$", f"^[\\w-]{CANARY}$",
    f"^{CANARY}$x$",
], ids=["lookbehind", "unicode-property", "posix-class", "escape-in-class", "inner-anchor"])
def test_patterns_the_converter_cannot_honour_never_reach_the_logs(
        llama_gateway: Gateway, key: str, pattern: str) -> None:
    """The core's converter prints an anchored pattern it cannot honour to descriptor 2,
    verbatim, from native code: the server sends that descriptor to /dev/null, and its own
    JSON logs still arrive."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}
    body = {"messages": HI, "max_tokens": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}
    response = _post(llama_gateway, key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    output = llama_gateway.output()
    assert CANARY not in output and "JSON schema conversion" not in output
    assert '"event": "request"' in output or '"event":"request"' in output, output[-2000:]


def test_more_choices_than_slots_are_refused_by_name(llama_gateway: Gateway) -> None:
    """The core runs a prompt's choices side by side, one per slot (n_parallel = 1 here); a
    tenant whose contract allows n = 2 is told which parameter the backend cannot honour."""
    key = llama_gateway.new_key("globex-research")
    body = {"messages": HI, "n": 2, "max_tokens": 2}
    message = _refused(llama_gateway, _post(llama_gateway, key, "/v1/chat/completions", body), "n")
    assert "more than 1 choices" in message


def _too_long(gw: Gateway, response: httpx.Response, param: str) -> str:
    """The envelope's message, checked: the OpenAI API's code and ``param``, counts only."""
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"message": response.json()["error"]["message"],
                                        "type": "invalid_request_error", "param": param,
                                        "code": "context_length_exceeded"}
    assert CANARY not in response.text and CANARY not in gw.output()
    assert "Traceback" not in gw.output() and "unhandled_error" not in gw.output()
    return str(response.json()["error"]["message"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", sorted(TOO_LONG))
def test_prompt_past_the_context_is_refused_as_openai_does(llama_gateway: Gateway, key: str,
                                                           case: str, stream: bool) -> None:
    path, body, param = TOO_LONG[case]
    message = _too_long(llama_gateway, _post(llama_gateway, key, path, body | {"stream": stream}),
                        param)
    output = body.get("max_completion_tokens", body.get("max_tokens", 4))
    found = re.fullmatch(rf"this request needs (\d+) tokens but the model holds at most 2048 "
                         rf"\((\d+) in the {param}, {output} for the completion\)", message)
    assert found and int(found[1]) == int(found[2]) + output > 2048, message


def test_embedding_input_longer_than_a_batch_is_refused(llama_gateway: Gateway, key: str) -> None:
    response = _post(llama_gateway, key, "/v1/embeddings", {"input": f"{CANARY} " * 600})
    message = _too_long(llama_gateway, response, "input")
    found = re.fullmatch(r"this request needs (\d+) tokens in one input but the model embeds at "
                         r"most (\d+) at once", message)
    assert found and int(found[1]) > int(found[2]), message


def test_prompt_past_the_context_is_logged_counted_and_recorded(llama_gateway: Gateway,
                                                                key: str) -> None:
    """A failed request like any other: one log line and one count under its status, and a
    completion record saying so; none of them with content."""
    labels = ("/v1/chat/completions", MODEL, "plaintext", 400)
    before = request_counts(llama_gateway).get(labels, 0)
    path, body, param = TOO_LONG["chat"]
    response = _post(llama_gateway, key, path, body)
    _too_long(llama_gateway, response, param)
    request_id = response.headers["x-request-id"]
    lines = request_log(llama_gateway, request_id)
    assert [(line["status"], line["reason"]) for line in lines] == [(400, "context_length_exceeded")]
    assert request_counts(llama_gateway).get(labels, 0) == before + 1
    completion = request_records(llama_gateway, key, request_id)["completion"]
    assert completion["status"] == 400 and completion["abort_reason"] == "context_length_exceeded"
    assert completion["completion_tokens"] == 0


@pytest.mark.parametrize("case", sorted(UNSUPPORTED_PARAMETERS))
def test_ignored_parameter_is_refused(llama_gateway: Gateway, key: str, case: str) -> None:
    path, body, param = UNSUPPORTED_PARAMETERS[case]
    message = _refused(llama_gateway, _post(llama_gateway, key, path, body), param)
    assert message.startswith(f"the model's backend does not support '{param}'")


def test_what_can_be_honoured_is_served(llama_gateway: Gateway, key: str) -> None:
    gw = llama_gateway
    embedding = _post(gw, key, "/v1/embeddings", {"input": "x", "dimensions": 576})
    assert embedding.status_code == 200 and len(embedding.json()["data"][0]["embedding"]) == 576
    echoed = _post(gw, key, "/v1/completions", {"prompt": "Once upon", "echo": True, "suffix": ""})
    assert echoed.status_code == 200 and echoed.json()["choices"][0]["text"].startswith("Once upon")
    no_tools = _post(gw, key, "/v1/chat/completions",
                     {"messages": HI, "tools": TOOLS, "tool_choice": "none"})
    assert no_tools.status_code == 200 and "tool_calls" not in no_tools.json()["choices"][0]["message"]
    assert _post(gw, key, "/v1/completions", {"prompt": "Hi", "best_of": 1}).status_code == 200


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """``condition()`` once it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)
    return found


def test_whole_answer_stops_when_the_client_leaves(llama_gateway: Gateway, key: str,
                                                  core_calls: Path) -> None:
    """A client that leaves a whole answer once its first token is generated: the gateway
    stops the model's call there, unfinished (run on, it would end with "length" after all
    1500 tokens, on any machine), and records the request as left, with no answer."""
    seen = len(gateway_calls(core_calls))
    log_from = len(llama_gateway.output())
    body = json.dumps(LONG).encode()
    request = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", llama_gateway.port)) as sock:
        sock.sendall(request + body)
        _wait_for(lambda: seen in gateway_calls(core_calls), "first token")
    left = _wait_for(lambda: (call := gateway_calls(core_calls)[seen])["returned"] and call,
                     "end of the model's call")
    assert left["max_tokens"] == LONG["max_tokens"]
    assert left["finish_reason"] is None and left["text_chunks"] < LONG["max_tokens"], left

    def logged() -> list[dict[str, Any]]:
        lines = (json.loads(line) for line in llama_gateway.output()[log_from:].splitlines()
                 if line.startswith("{"))
        return [line for line in lines if line.get("event") == "request"]

    (line,) = _wait_for(logged, "request log line")
    assert (line["status"], line["reason"], line["completion_tokens"]) == (
        499, "client_disconnected", 0)
    completion = request_records(llama_gateway, key, line["request_id"])["completion"]
    assert completion["abort_reason"] == "client_disconnected"
    assert completion["completion_tokens"] == 0
    # The one slot is free: the next request is served.
    response = _post(llama_gateway, key, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_prompt_progress_reports_never_reach_the_client(llama_gateway: Gateway, key: str,
                                                        path: str) -> None:
    """The core's reports on evaluating a prompt (asked for to size it against the context)
    carry prompt-cache counts and timings; none is relayed, streamed or not."""
    prompt = {"messages": [{"role": "user", "content": "Hi " * 600}]} if "chat" in path else {
        "prompt": "Hi " * 600}
    body = {"model": MODEL, "max_tokens": 3, "stream": True, **prompt}
    with httpx.stream("POST", f"{llama_gateway.url}{path}", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        streamed = response.read()
    whole = _post(llama_gateway, key, path, {k: v for k, v in body.items() if k != "stream"})
    assert response.status_code == 200 and whole.status_code == 200
    assert b"data: [DONE]" in streamed
    assert b"prompt_progress" not in streamed and b"prompt_progress" not in whole.content


def test_an_embeddings_batch_whose_caller_left_frees_its_slot(one_slot: LlamaCppBackend) -> None:
    """The core cannot be stopped within a call: a batch is embedded one input at a time, so a
    caller that leaves (``_CancelOnDisconnect`` cancels its await) frees the slot after the
    input under way, not after the whole batch, and a tenant cannot keep every slot busy with
    abandoned work."""
    text = " ".join(f"item{i}" for i in range(120))

    async def scenario() -> tuple[float, float]:
        started = time.monotonic()
        await one_slot.embed({"model": MODEL, "input": text})
        one = time.monotonic() - started
        batch = asyncio.create_task(one_slot.embed({"model": MODEL, "input": [text] * 6}))
        await asyncio.sleep(one / 2)
        batch.cancel()
        started = time.monotonic()
        answer = await one_slot.embed({"model": MODEL, "input": ["hi", "there"]})
        assert [item["index"] for item in answer["data"]] == [0, 1]
        return one, time.monotonic() - started

    one, waited = asyncio.run(scenario())
    assert waited < 3 * one, (one, waited)  # the whole batch would hold the slot ~5 times longer


def test_logit_bias_token_ids_past_the_vocabulary_are_refused(one_slot: LlamaCppBackend) -> None:
    """The core wraps an id past 32 bits onto another token and drops one past its vocabulary,
    silently: both are refused, naming the parameter; an id it has is taken."""
    vocabulary = one_slot._caps.vocabulary
    assert vocabulary == 49152  # SmolLM2's
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2, "temperature": 0}
    for token in (vocabulary, 4294968296):
        with pytest.raises(BackendRejected) as refused:
            asyncio.run(one_slot.generate("completions", {**body, "logit_bias": {str(token): 5}}))
        assert refused.value.param == "logit_bias"
    answer = asyncio.run(one_slot.generate("completions", {**body, "logit_bias": {"1000": 5}}))
    assert answer["choices"][0]["text"]
