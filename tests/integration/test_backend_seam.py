"""The backend seam against a FaultInjectingUpstream: what is forwarded (declared fields only),
and how malformed, truncated or non-SSE answers end (502, fixed message, nothing relayed, a
completion record with its abort reason, never a 500 or a traceback)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import request_records
from tests.integration.faulty_upstream import (
    BUSY,
    CACHE_COUNTERS,
    CACHED_DETAILS,
    CONTEXT_EXCEEDED,
    HANG_UP,
    MODELS,
    REJECTED,
    SEPARATORS,
    WHOLE_FAULTS,
    FaultInjectingUpstream,
)
from tests.server import Gateway, free_port, start_gateway

pytestmark = pytest.mark.timeout(120)

CANARY = "CANARY" + secrets.token_hex(8)
MESSAGES = [{"role": "user", "content": f"repeat {CANARY}"}]
MALFORMED_STREAMS = ["stream-fractional-usage", "stream-bad-chunk", "stream-error-event",
                     "stream-invalid-utf8"]
# (path, body, param) per endpoint: the field a prompt too long for the context is named by.
PROMPTS = {
    "chat": ("/v1/chat/completions", {"messages": MESSAGES}, "messages"),
    "chat-stream": ("/v1/chat/completions", {"messages": MESSAGES, "stream": True}, "messages"),
    "completions": ("/v1/completions", {"prompt": f"repeat {CANARY}"}, "prompt"),
    "completions-stream": ("/v1/completions", {"prompt": CANARY, "stream": True}, "prompt"),
    "embeddings": ("/v1/embeddings", {"input": CANARY}, "input"),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultInjectingUpstream]:
    with FaultInjectingUpstream() as up:
        yield up


def _config(upstream: FaultInjectingUpstream, models: Iterable[str], *, kind: str = "openai",
            settings: str = "") -> str:
    """A gateway (plaintext allowed) routing each of ``models`` to the upstream, a backend of
    type ``kind``; ``settings``: more top-level lines."""
    return (f'allow_plaintext = true\n{settings}[backends.faulty]\ntype = "{kind}"\n'
            f'url = "{upstream.url}/v1"\n' + "".join(
                f'[models."{m}"]\nbackend = "faulty"\nretention_tier = "attested-zero"\n'
                for m in models))


@pytest.fixture(scope="module")
def seam_gateway(workdir: Path, upstream: FaultInjectingUpstream) -> Iterator[Gateway]:
    gw = start_gateway(workdir, _config(upstream, MODELS))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(seam_gateway: Gateway) -> str:
    return seam_gateway.new_key("seam")


def _post(gw: Gateway, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def _clean(gw: Gateway, response: httpx.Response) -> None:
    assert CANARY not in response.text
    assert "Traceback" not in gw.output() and CANARY not in gw.output()


def test_only_declared_fields_are_forwarded(seam_gateway: Gateway, key: str,
                                            upstream: FaultInjectingUpstream) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    body = {"model": "ok", "messages": [
        {"role": "system", "content": "be brief", "extra": 1},
        {"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": image, "detail": "low", "fetch": "x"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                      "filename": "a.pdf", "file_url": "http://x/"}}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}},
                   "vector_store_ids": ["vs_1"]}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "r", "schema": {}, "url": "http://x/"}}}
    assert _post(seam_gateway, key, body).status_code == 200
    forwarded = upstream.received[-1]
    assert forwarded["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                      "filename": "a.pdf"}}]}]
    assert forwarded["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    legacy = [{"role": "user", "content": "weather?"},
              {"role": "assistant", "content": None,
               "function_call": {"name": "get_weather", "arguments": "{}"}},
              {"role": "function", "name": "get_weather", "content": "sunny"}]
    assert _post(seam_gateway, key, {"model": "ok", "messages": legacy}).status_code == 200
    assert upstream.received[-1]["messages"] == [{"role": "user", "content": "weather?"}, *[
        {k: v for k, v in m.items() if v is not None} for m in legacy[1:]]]
    assert forwarded["response_format"] == {"type": "json_schema",
                                            "json_schema": {"name": "r", "schema": {}}}


def test_declared_sampling_and_tool_parameters_are_forwarded(
        seam_gateway: Gateway, key: str, upstream: FaultInjectingUpstream) -> None:
    body = {"model": "ok", "messages": MESSAGES, "parallel_tool_calls": False,
            "logit_bias": {"50256": -100, "13": 5}, "reasoning_effort": "low",
            "modalities": ["text"], "safety_identifier": "user-1f3a", "prompt_cache_key": "k-7",
            "user": "u-2", "top_k": 20, "min_p": 0.05}
    assert _post(seam_gateway, key, body).status_code == 200
    forwarded = upstream.received[-1]
    assert {k: forwarded[k] for k in ("parallel_tool_calls", "logit_bias", "reasoning_effort",
                                      "modalities", "top_k", "min_p")} == {
        "parallel_tool_calls": False, "logit_bias": {"50256": -100, "13": 5},
        "reasoning_effort": "low", "modalities": ["text"], "top_k": 20, "min_p": 0.05}
    # End-user and cache-routing identifiers stay in the gateway; an openai upstream gets no
    # cache_salt unless configured to (test_each_tenant_has_its_own_vllm_cache_salt).
    assert not {"safety_identifier", "prompt_cache_key", "user", "cache_salt"} & set(forwarded)
    httpx.post(f"{seam_gateway.url}/v1/completions", timeout=30,
               headers={"Authorization": f"Bearer {key}"},
               json={"model": "ok", "prompt": "a", "best_of": 1, "logit_bias": {"7": 1}})
    assert {k: upstream.received[-1][k] for k in ("prompt", "best_of", "logit_bias")} == {
        "prompt": "a", "best_of": 1, "logit_bias": {"7": 1}}


@pytest.mark.parametrize("fault", WHOLE_FAULTS)
def test_malformed_answer_is_502_with_a_record(seam_gateway: Gateway, key: str, fault: str) -> None:
    response = _post(seam_gateway, key, {"model": fault, "messages": MESSAGES})
    assert response.status_code == 502
    assert response.json()["error"] == {"message": "the upstream sent a malformed response",
                                        "type": "api_error", "param": None, "code": "backend_error"}
    _clean(seam_gateway, response)
    assert response.headers["sealgate-receipt"]
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 502
    assert records["completion"]["abort_reason"] == "backend_error"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_429_is_passed_on_with_its_wait(seam_gateway: Gateway, key: str,
                                                     stream: bool) -> None:
    """Not a 503 that clients retry after a second: the upstream's own wait, and nothing of its
    message (which may quote the request)."""
    response = _post(seam_gateway, key, {"model": BUSY, "messages": MESSAGES, "stream": stream})
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "backend_rate_limited"
    _clean(seam_gateway, response)
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 429


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "status", "code", "wait"), [
    # The gateway's own settings (url, model, key): not the client's request to fix.
    ("status-401", 502, "backend_error", None), ("status-404", 502, "backend_error", None),
    # Overloaded: its own wait, not a retry after a second.
    ("status-503", 503, "backend_unavailable", "30"),
    ("status-500", 503, "backend_unavailable", "1"), ("status-504", 503, "backend_unavailable", "1"),
])
def test_upstream_statuses_are_answered_by_what_they_mean(
        seam_gateway: Gateway, key: str, stream: bool, model: str, status: int, code: str,
        wait: str | None) -> None:
    response = _post(seam_gateway, key, {"model": model, "messages": MESSAGES, "stream": stream})
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert response.headers.get("retry-after") == wait
    _clean(seam_gateway, response)
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == status


@pytest.mark.parametrize("endpoint", sorted(PROMPTS))
@pytest.mark.parametrize("model", CONTEXT_EXCEEDED)
def test_an_upstream_context_overflow_is_passed_on_by_its_code(
        seam_gateway: Gateway, key: str, model: str, endpoint: str) -> None:
    """However the upstream says it, the client gets the OpenAI API's answer with a fixed
    message: nothing of the upstream's, which may quote the request."""
    path, body, param = PROMPTS[endpoint]
    response = httpx.post(f"{seam_gateway.url}{path}", json={"model": model, **body}, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": "this request needs more tokens than the model holds",
        "type": "invalid_request_error", "param": param, "code": "context_length_exceeded"}
    _clean(seam_gateway, response)
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 400


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_400_quoting_overflow_words_is_a_plain_rejection(
        seam_gateway: Gateway, key: str, stream: bool) -> None:
    """Words the request itself may hold are not taken for the upstream's: only the opening
    of its message counts."""
    response = _post(seam_gateway, key, {"model": REJECTED, "messages": MESSAGES, "stream": stream})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "the upstream rejected the request (HTTP 400)",
        "type": "invalid_request_error", "param": None, "code": "upstream_rejected"}
    _clean(seam_gateway, response)


@pytest.mark.parametrize("fault", MALFORMED_STREAMS)
def test_malformed_stream_ends_with_error_event_and_record(seam_gateway: Gateway, key: str,
                                                           fault: str) -> None:
    response = _post(seam_gateway, key, {"model": fault, "messages": MESSAGES, "stream": True})
    events = [e for e in response.text.split("\n\n") if e]
    assert response.status_code == 200 and '"error"' in events[-1] and "[DONE]" not in response.text
    _clean(seam_gateway, response)
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 502
    assert records["completion"]["abort_reason"] == "backend_error"


def test_truncated_stream_is_not_reported_complete(seam_gateway: Gateway, key: str) -> None:
    response = _post(seam_gateway, key, {"model": "stream-truncated", "messages": MESSAGES,
                                         "stream": True})
    events = [e for e in response.text.split("\n\n") if e]
    assert "[DONE]" not in response.text and len(events) == 3
    assert '"code":"upstream_truncated"' in events[-1]
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 502
    assert records["completion"]["abort_reason"] == "upstream_truncated"


def test_json_instead_of_a_stream_is_502(seam_gateway: Gateway, key: str) -> None:
    response = _post(seam_gateway, key, {"model": "stream-as-json", "messages": MESSAGES,
                                         "stream": True})
    assert response.status_code == 502 and response.json()["error"]["code"] == "backend_error"
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 502


def test_bare_answers_get_what_the_openai_shape_requires(seam_gateway: Gateway, key: str) -> None:
    """Fields an upstream left out that only position and role can supply are filled in."""
    chat = _post(seam_gateway, key, {"model": "ok-bare", "messages": MESSAGES})
    assert chat.status_code == 200, chat.text
    choice = chat.json()["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    embeddings = httpx.post(f"{seam_gateway.url}/v1/embeddings", timeout=30,
                            json={"model": "ok-bare-embeddings", "input": "x"},
                            headers={"Authorization": f"Bearer {key}"})
    assert embeddings.status_code == 200, embeddings.text
    assert [(d["object"], d["index"]) for d in embeddings.json()["data"]] == [
        ("embedding", 0), ("embedding", 1)]


@pytest.mark.parametrize("model", ["ok", "ok-annotated", "ok-stray-message"])
def test_complete_stream_ends_with_done(seam_gateway: Gateway, key: str, model: str) -> None:
    response = _post(seam_gateway, key, {"model": model, "messages": MESSAGES, "stream": True})
    assert response.text.endswith("data: [DONE]\n\n")
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 200 and "abort_reason" not in records["completion"]


def test_stream_choices_get_their_index(seam_gateway: Gateway, key: str) -> None:
    response = _post(seam_gateway, key, {"model": "ok-no-index", "messages": MESSAGES,
                                         "stream": True})
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    assert chunks and all(choice["index"] == 0 for c in chunks for choice in c["choices"])


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_chunks_share_one_id_and_usage_comes_alone(seam_gateway: Gateway, key: str,
                                                          include_usage: bool) -> None:
    """A backend whose chunk ids lack the OpenAI prefix (and change), with no ``created`` and
    the usage on its last content chunk, still streams as OpenAI does: one id and one
    ``created`` for every chunk, and the usage (when asked for) on a chunk of its own, every
    other chunk then saying ``"usage": null``."""
    response = _post(seam_gateway, key, {"model": "ok-unprefixed", "messages": MESSAGES,
                                         "stream": True,
                                         "stream_options": {"include_usage": include_usage}})
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in chunks}) == 1
    assert all(c["choices"] for c in chunks[:3])
    assert all(("usage" in c) is include_usage and c.get("usage") is None for c in chunks[:3])
    if include_usage:
        assert len(chunks) == 4 and chunks[3]["choices"] == []
        assert chunks[3]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    else:
        assert len(chunks) == 3
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["completion_tokens"] == 2


def test_stream_content_with_unicode_line_separators_passes_whole(seam_gateway: Gateway,
                                                                 key: str) -> None:
    """Events split at CR, LF and CRLF only: raw U+2028, U+2029 and U+0085 inside the JSON
    (legal, and what vLLM sends) stay inside their event."""
    response = _post(seam_gateway, key, {"model": "ok-separators", "messages": MESSAGES,
                                         "stream": True})
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    assert events[-1] == "[DONE]", response.text
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == SEPARATORS
    records = request_records(seam_gateway, key, response.headers["x-request-id"])
    assert records["completion"]["status"] == 200


def test_chat_logprobs_have_their_refusal_field(seam_gateway: Gateway, key: str) -> None:
    response = _post(seam_gateway, key, {"model": "ok-logprobs", "messages": MESSAGES,
                                         "logprobs": True})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["logprobs"] == {"content": [], "refusal": None}


def _usage(response: httpx.Response, stream: bool) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    if not stream:
        return dict(response.json()["usage"])
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return dict(json.loads(events[-2])["usage"])


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsalted_upstreams_cached_token_count_is_not_relayed(seam_gateway: Gateway, key: str,
                                                                  stream: bool) -> None:
    """An upstream whose prefix cache may be shared across tenants: how much of a prompt it
    found cached would tell one tenant what another's prompts begin with."""
    body = {"model": "ok-cached", "messages": MESSAGES, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    usage = _usage(_post(seam_gateway, key, body), stream)
    assert usage["prompt_tokens_details"] == {"audio_tokens": 0}
    assert usage["prompt_tokens"] == 5
    assert not set(CACHE_COUNTERS) & set(usage)  # nor in a provider's own counters


def test_each_tenant_has_its_own_vllm_cache_salt(workdir: Path,
                                                 upstream: FaultInjectingUpstream) -> None:
    """vLLM keys its prefix cache by ``cache_salt``: one salt per tenant, the same on every
    request of that tenant and different from any other's, so no tenant can read from the
    answer's timing or ``cached_tokens`` what another's prompts begin with. The salt names no
    tenant (not its id, nor the pseudonym that records carry)."""
    gw = start_gateway(workdir, _config(upstream, ("ok", "ok-cached"), kind="vllm"))
    try:
        salts: dict[str, list[str]] = {}
        for tenant in ("salt-a", "salt-b"):
            key = gw.new_key(tenant)
            for stream in (False, True, False):
                response = _post(gw, key, {"model": "ok", "messages": MESSAGES, "stream": stream})
                assert response.status_code == 200, response.text
                salts.setdefault(tenant, []).append(upstream.received[-1]["cache_salt"])
            # Salted per tenant, its cache's hits are the tenant's own: their count is relayed.
            for stream in (False, True):
                body = {"model": "ok-cached", "messages": MESSAGES, "stream": stream,
                        "stream_options": {"include_usage": True} if stream else None}
                usage = _usage(_post(gw, key, {k: v for k, v in body.items() if v is not None}),
                               stream)
                assert usage["prompt_tokens_details"] == CACHED_DETAILS
        names = [t[f] for t in json.loads(gw.cli("tenants", "list", "--json").stdout)
                 for f in ("id", "pseudonym")]
    finally:
        gw.stop()
    a, b = (set(salts[t]) for t in ("salt-a", "salt-b"))
    assert len(a) == 1 and len(b) == 1 and a != b
    for salt in a | b:
        assert 16 <= len(salt) <= 128 and not {"@", "/", "\\", "\x00"} & set(salt)
        assert not any(name in salt for name in ("salt-a", "salt-b", *names))


def test_an_answer_without_usage_is_charged_its_estimate(workdir: Path,
                                                         upstream: FaultInjectingUpstream) -> None:
    """A backend that answers without ``usage`` counted nothing: the tenant's token budget is
    charged the prompt's estimate and the output limit asked for, or such a backend would get
    around the budget. The record keeps the backend's count (none)."""
    gw = start_gateway(workdir, _config(upstream, ("ok", "ok-uncounted"),
                                        settings="tenant_tokens_per_minute = 100\n"))
    try:
        counted, uncounted = gw.new_key("counted"), gw.new_key("uncounted")
        for _ in range(3):  # 6 tokens each, as the backend counts them
            response = _post(gw, counted, {"model": "ok", "messages": MESSAGES, "max_tokens": 150})
            assert response.status_code == 200, response.text
        first = _post(gw, uncounted, {"model": "ok-uncounted", "messages": MESSAGES,
                                      "max_tokens": 150})
        assert first.status_code == 200 and "usage" not in first.json()
        completion = request_records(gw, uncounted, first.headers["x-request-id"])["completion"]
        assert completion["prompt_tokens"] == 0 and completion["completion_tokens"] == 0
        refused = _post(gw, uncounted, {"model": "ok-uncounted", "messages": MESSAGES})
    finally:
        gw.stop()
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "token_rate_limit_exceeded"


def test_a_request_that_never_reached_its_backend_is_not_charged(
        workdir: Path, upstream: FaultInjectingUpstream) -> None:
    """A backend whose port refuses connections never saw the request: 503, and the tenant's
    token budget is charged nothing (it was charged the output limit, as if it had timed out
    while generating). One that took the request and hung up may have generated: charged."""
    dead = f'[backends.dead]\ntype = "openai"\nurl = "http://127.0.0.1:{free_port()}/v1"\n'
    config = _config(upstream, ("ok", HANG_UP), settings="tenant_tokens_per_minute = 100\n")
    gw = start_gateway(workdir, config + dead + '[models.dead]\nbackend = "dead"\n'
                       'retention_tier = "attested-zero"\n')
    try:
        unreached, hung_up = gw.new_key("unreached"), gw.new_key("hung-up")
        for _ in range(3):
            response = _post(gw, unreached, {"model": "dead", "messages": MESSAGES, "max_tokens": 150})
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "backend_unavailable"
        after_unreached = _post(gw, unreached, {"model": "ok", "messages": MESSAGES})
        response = _post(gw, hung_up, {"model": HANG_UP, "messages": MESSAGES, "max_tokens": 150})
        assert response.status_code == 503, response.text
        after_hang_up = _post(gw, hung_up, {"model": "ok", "messages": MESSAGES})
    finally:
        gw.stop()
    assert after_unreached.status_code == 200, after_unreached.text
    assert after_hang_up.status_code == 429, after_hang_up.text
