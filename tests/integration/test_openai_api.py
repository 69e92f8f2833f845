"""The OpenAI-compatible API driven by the official ``openai`` SDK over a real server."""

from __future__ import annotations

import json
import socket
import time
from email.utils import formatdate
from typing import Any

import httpx
import openai
import pytest
import yaml

from proxy.gateway import GATEWAY_PATH
from proxy.ohttp import BHTTPRequest, decode_key_configs, encapsulate_request, encode_request
from tests.integration.conftest import MODEL, request_counts, request_log, request_records
from tests.server import Gateway, Proc

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def client(gateway: Gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids and "fast-echo" in ids
    assert all(m.object == "model" and isinstance(m.created, int) for m in models.data)
    assert client.models.retrieve(MODEL).id == MODEL
    assert client.models.retrieve("acme/fast-echo").id == "acme/fast-echo"  # "/" in a name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("acme/no-such-model")


def test_chat_completion_real_model(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12)
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    assert result.model == MODEL
    assert abs(result.created - time.time()) < 600
    choice = result.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant" and choice.message.content
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=10,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_chat_streaming_without_usage_ends_with_done(gateway: Gateway, api_key: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
            "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in e for e in events[:-1])


def test_completions(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=6)
    assert result.object == "text_completion" and result.id.startswith("cmpl-")
    assert result.choices[0].text and result.choices[0].finish_reason in ("stop", "length")
    assert result.usage is not None and result.usage.completion_tokens > 0


def test_completions_streamed_through_an_upstream(client: openai.OpenAI) -> None:
    # Legacy completions chunks (``text``), passed through the openai backend's checked seam.
    chunks = list(client.completions.create(model="fast-echo", prompt="The sky is", max_tokens=3,
                                            stream=True))
    assert chunks and all(c.object == "text_completion" and c.model == "fast-echo" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices).strip() == "ok ok ok"


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input=["first text", "second text"])
    assert result.object == "list" and result.model == MODEL
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 16
    assert result.data[0].embedding != result.data[1].embedding


# -- errors: every failure is an OpenAI envelope with a string code ----------------------------
def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["code"], str)
    assert "Traceback" not in response.text
    return dict(body["error"])


def _post(gateway: Gateway, path: str, content: bytes, key: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{gateway.url}{path}", content=content, headers=headers, timeout=30)


def test_malformed_json(gateway: Gateway, api_key: str) -> None:
    response = _post(gateway, "/v1/chat/completions", b'{"model": ', api_key)
    assert response.status_code == 400 and _error(response)["code"] == "invalid_json"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9"}]}'),
    ("/v1/completions", b'{"model": "m", "prompt": "caf\xe9"}'),
    ("/v1/embeddings", b'{"model": "m", "input": "caf\xe9"}'),
    ("/v1/chat/completions", b'{"model": "m", "caf\xe9": 1}'),
])
def test_invalid_utf8_inside_json_is_invalid_json(gateway: Gateway, api_key: str, path: str,
                                                  body: bytes) -> None:
    response = _post(gateway, path, body, api_key)
    assert response.status_code == 400, response.text
    assert _error(response)["code"] == "invalid_json"
    refused = _post(gateway, "/v1/fine_tuning/jobs", b'{"purpose": "caf\xe9"}', api_key)
    assert refused.status_code == 403 and _error(refused)["code"] == "policy_denied"


@pytest.mark.parametrize(("body", "param"), [
    (b'{"model": "x"}', "messages"),
    (b'{"model": "x", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
     "temperature"),
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}',
     "max_tokens"),
    # Beyond what every policy engine compares exactly (rego-cpp would wrap it to 5).
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], '
     b'"max_tokens": 18446744073709551621}', "max_tokens"),
    # As the OpenAI API answers: stream options belong to a stream.
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], '
     b'"stream_options": {"include_usage": true}}', "stream_options"),
    # Likewise: alternatives belong to logprobs.
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}',
     "top_logprobs"),
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "logprobs": false, '
     b'"top_logprobs": 2}', "top_logprobs"),
    # Inside a map the parameter is the map (its keys are the client's).
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"12": 101}}',
     "logit_bias"),
    (b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "metadata": {"k": 1}}',
     "metadata"),
])
def test_schema_violation_names_param(gateway: Gateway, api_key: str, body: bytes, param: str) -> None:
    response = _post(gateway, "/v1/chat/completions", body, api_key)
    error = _error(response)
    assert response.status_code == 400
    assert error["code"] == "invalid_request_error" and error["param"] == param
    assert "wizard" not in error["message"] and "many" not in error["message"]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/embeddings", b'{"model": "fast-echo", "input": ""}', "input"),
    ("/v1/embeddings", b'{"model": "fast-echo", "input": ["a", ""]}', "input[1]"),
    ("/v1/embeddings", b'{"model": "fast-echo", "input": [[]]}', "input[0]"),
    ("/v1/completions", b'{"model": "fast-echo", "prompt": [[1], []]}', "prompt[1]"),
])
def test_empty_inputs_are_refused_by_name(gateway: Gateway, api_key: str, path: str, body: bytes,
                                          param: str) -> None:
    """As the OpenAI API refuses them, before any backend sees them."""
    response = _post(gateway, path, body, api_key)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert (error["code"], error["param"], error["message"]) == (
        "invalid_request_error", param, "must not be empty")


def test_missing_and_bad_key(client: openai.OpenAI, gateway: Gateway) -> None:
    missing = httpx.get(f"{gateway.url}/v1/models")
    assert missing.status_code == 401 and _error(missing)["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sg-00000000-" + "x" * 43,
                        max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_revoked_key_is_refused(gateway: Gateway) -> None:
    key = gateway.new_key("revoked-co")
    ok = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    prefix = key.split("-")[1]
    assert gateway.cli("keys", "revoke", prefix).returncode == 0
    time.sleep(1.2)  # the key cache lives 1 s
    refused = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model",
                                       messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"


def test_body_over_limit(gateway: Gateway, api_key: str) -> None:
    big = b'{"model": "fast-echo", "messages": [{"role": "user", "content": "' + b"a" * 70000 + b'"}]}'
    response = _post(gateway, "/v1/chat/completions", big, api_key)
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"


@pytest.mark.parametrize("stream", [False, True])
def test_backend_down(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="down-model", stream=stream,
                                       messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code in (502, 503) and info.value.code == "backend_unavailable"
    assert "Traceback" not in str(info.value.body)


def _once_risen(upstream: Proc, before: dict[str, int], counter: str) -> dict[str, int]:
    """The fast upstream's counters once ``counter`` has risen above ``before`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        after: dict[str, int] = httpx.get(f"{upstream.url}/stats").json()
        if after[counter] > before[counter] or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def test_client_disconnect_cancels_backend(gateway: Gateway, api_key: str, fast_upstream: Proc) -> None:
    before = httpx.get(f"{fast_upstream.url}/stats").json()
    body = {"model": "fast-echo", "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 2000, "temperature": 1.0, "stream": True}  # 10 ms per chunk upstream
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {api_key}"}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    after = _once_risen(fast_upstream, before, "streams_cancelled")
    assert after["streams_cancelled"] == before["streams_cancelled"] + 1
    assert after["streams_finished"] == before["streams_finished"]


@pytest.mark.parametrize("filtered", [False, True])
def test_client_leaving_before_the_first_chunk_cancels_backend(gateway: Gateway, api_key: str,
                                                                fast_upstream: Proc,
                                                                filtered: bool) -> None:
    """Queueing and prefill come before the first chunk: a client that leaves then cancels
    the backend call too, and the completion record says it left. Also when the upstream
    first sends a chunk that carries nothing to send on (``filtered``: prompt-filter results)."""
    before = httpx.get(f"{fast_upstream.url}/stats").json()
    body = {"model": "fast-echo", "messages": [{"role": "user", "content": "go"}],
            "stream": True, "presence_penalty": 2.0,  # upstream: 2 s before the first chunk
            "frequency_penalty": 1.0 if filtered else 0.0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=0.5,
                   headers={"Authorization": f"Bearer {api_key}"})
    after = _once_risen(fast_upstream, before, "streams_cancelled_in_prefill")
    assert after["streams_cancelled_in_prefill"] == before["streams_cancelled_in_prefill"] + 1
    assert after["streams_finished"] == before["streams_finished"]
    log = [json.loads(line) for line in gateway.output().splitlines() if '"status": 499' in line
           or '"status":499' in line]
    assert log and log[-1]["reason"] == "client_disconnected" and log[-1]["ttft_ms"] is None


def test_health_and_openapi(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    # A backend that is down is reported; the gateway is still ready (it answers requests for
    # that backend's models 503 backend_unavailable, and serves the others).
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.json()["backends"]["local"] is True
    assert ready.json()["backends"]["down"] is False and ready.status_code == 200
    assert ready.json()["audit_log"] is True and ready.json()["status"] == "ready"
    every = httpx.get(f"{gateway.url}/readyz", params={"backends": "all"})
    assert every.status_code == 503 and every.json()["status"] == "not_ready"
    assert every.json()["backends"] == ready.json()["backends"]
    odd = httpx.get(f"{gateway.url}/readyz", params={"backends": "some"})
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "backends"
    schema = httpx.get(f"{gateway.url}/schema/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/embeddings" in schema["paths"]
    # The document itself at /schema too, never a viewer page loading scripts from a CDN.
    root = httpx.get(f"{gateway.url}/schema")
    assert root.headers["content-type"].startswith("application/") and root.json() == schema
    assert "openapi" in yaml.safe_load(httpx.get(f"{gateway.url}/schema/openapi.yaml").text)
    for viewer in ("/schema/swagger", "/schema/redoc", "/schema/nothing.json"):
        missing = httpx.get(f"{gateway.url}{viewer}")  # the JSON envelope, not an HTML page
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'sealgate_requests_total{endpoint="/v1/chat/completions"' in metrics
    assert "sealgate_tokens_total" in metrics


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_nullable_stream_and_n_take_their_defaults(gateway: Gateway, api_key: str,
                                                   path: str) -> None:
    """The OpenAI API marks ``stream`` and ``n`` nullable: a client that writes out every
    field gets one whole answer with one choice."""
    body: dict[str, Any] = {"model": "fast-echo", "stream": None, "n": None}
    body |= {"messages": _HI} if "chat" in path else {"prompt": "hi"}
    response = _post(gateway, path, json.dumps(body).encode(), api_key)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 1


def test_an_allowed_endpoint_not_served_here_is_a_404_not_a_tier_denial(gateway: Gateway,
                                                                       api_key: str) -> None:
    """``/v1/responses`` with a configured model passes the policy (its tier is the route's),
    and is then answered as an endpoint this gateway does not serve; stored state still is
    denied, and an unknown model has no tier to pass."""
    answered = _post(gateway, "/v1/responses", b'{"model": "fast-echo", "input": "hi"}', api_key)
    assert answered.status_code == 404 and _error(answered)["code"] == "unsupported_endpoint"
    stored = _post(gateway, "/v1/responses",
                   b'{"model": "fast-echo", "input": "hi", "previous_response_id": "r"}', api_key)
    assert stored.status_code == 403 and "SG-STORE-002" in _error(stored)["message"]
    unknown = _post(gateway, "/v1/responses", b'{"model": "nope", "input": "hi"}', api_key)
    assert unknown.status_code == 403 and "SG-RETENTION-001" in _error(unknown)["message"]


def test_failed_requests_are_logged_and_counted(gateway: Gateway, api_key: str) -> None:
    """Every answer of a content endpoint is one request log line and one count, failures
    included, labelled by its error code and never by its content."""
    chat = b'{"model": "%s", "messages": [{"role": "user", "content": "CANARY-fail"}]}' % MODEL.encode()
    cases = [  # path, body, key, status, code, the counter's endpoint and model labels
        ("/v1/chat/completions", chat, "sk-wrong", 401, "invalid_api_key",
         "/v1/chat/completions", "none"),
        ("/v1/chat/completions", b'{"model": ', api_key, 400, "invalid_json",
         "/v1/chat/completions", "none"),
        ("/v1/chat/completions", chat.replace(MODEL.encode(), b"CANARY-model"), api_key, 404,
         "model_not_found", "/v1/chat/completions", "none"),
        ("/v1/fine_tuning/jobs", b'{"model": "CANARY-ft"}', api_key, 403, "policy_denied",
         "other", "none"),
    ]
    before = request_counts(gateway)
    for path, body, key, status, code, endpoint, model in cases:
        response = _post(gateway, path, body, key)
        assert response.status_code == status and _error(response)["code"] == code
        lines = request_log(gateway, response.headers["x-request-id"])
        assert len(lines) == 1 and lines[0]["status"] == status and lines[0]["reason"] == code
        labels = (endpoint, model, "plaintext", status)
        assert request_counts(gateway).get(labels, 0) == before.get(labels, 0) + 1, labels
    listed = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {api_key}"})
    assert listed.status_code == 200
    assert request_log(gateway, listed.headers["x-request-id"])[0]["status"] == 200
    # A model retrieval is counted under its own endpoint, with the model when it is served.
    for name, model in ((MODEL, MODEL), ("CANARY-model", "none")):
        labels = ("/v1/models/{model}", model, "plaintext", 200 if model != "none" else 404)
        counted = request_counts(gateway).get(labels, 0)
        got = httpx.get(f"{gateway.url}/v1/models/{name}", headers={"Authorization": f"Bearer {api_key}"})
        assert got.status_code == labels[3]
        assert request_counts(gateway).get(labels, 0) == counted + 1, labels
    assert "CANARY" not in gateway.output() + httpx.get(f"{gateway.url}/metrics").text


# -- values never echoed, whatever they contain ---------------------------------------------
CANARY = "CANARY-pt'\"`-x - at `$.model` 'q"
_HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"model": "x", "messages": [{"role": CANARY, "content": "a"}]},
     "messages[0].role"),
    ("/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": [
        {"type": CANARY}]}]}, "messages[0].content[0].type"),
    ("/v1/chat/completions", {"model": "x", "messages": _HI, "tool_choice": CANARY},
     "tool_choice"),
    ("/v1/chat/completions", {"model": "x", "messages": _HI, "n": CANARY}, "n"),
    ("/v1/chat/completions", {"model": "x", "messages": _HI, "metadata": {CANARY: 1}},
     "metadata"),
    ("/v1/embeddings", {"model": "x", "input": "a", "encoding_format": CANARY}, "encoding_format"),
])
def test_validation_errors_never_echo_values(gateway: Gateway, api_key: str, path: str,
                                             body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{gateway.url}{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {api_key}"})
    error = _error(response)
    assert response.status_code == 400 and error["param"] == param
    assert "CANARY" not in response.text and param in error["message"]


# -- content parts, tools and response formats: the OpenAI shapes only ------------------------
@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/CANARY"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "system", "content": [{"type": "refusal", "refusal": "no"}]}]},
     "messages[0].content[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_CANARY"]}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "grammar", "grammar": "x"}}, "response_format.type"),
])
def test_content_parts_and_tools_are_checked(gateway: Gateway, api_key: str,
                                             extra: dict[str, Any], param: str) -> None:
    body = {"model": "fast-echo", "messages": _HI, **extra}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {api_key}"})
    error = _error(response)
    assert response.status_code == 400 and error["code"] == "invalid_request_error"
    assert error["param"] == param and "CANARY" not in response.text
    if param.endswith("image_url.url"):
        assert "data: URL" in error["message"]


@pytest.mark.parametrize(("path", "extra", "param", "message"), [
    ("/v1/chat/completions", {"web_search_options": {}}, "web_search_options",
     "unrecognized request argument 'web_search_options'"),
    ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions",
     "unrecognized request argument 'functions'"),
    ("/v1/completions", {"suffix": "a", "repetition_penalty": 1.1}, "repetition_penalty",
     "unrecognized request argument 'repetition_penalty'"),
    ("/v1/chat/completions", {"top_k": -2}, "top_k", None),
    ("/v1/chat/completions", {"min_p": 1.5}, "min_p", None),
    ("/v1/embeddings", {"task": "x"}, "task", "unrecognized request argument 'task'"),
    # A parameter name is request text: named back only when it is a known parameter name,
    # and never read back from the decoder's message (which quotes it unescaped).
    ("/v1/chat/completions", {CANARY: 1}, None, "the request has an unrecognized argument"),
    ("/v1/chat/completions", {"patient_CANARY_positive": 1}, None,
     "the request has an unrecognized argument"),
    ("/v1/chat/completions", {"x` - at `$.CANARY": 1}, None,
     "the request has an unrecognized argument"),
    ("/v1/chat/completions", {"x` - at `key` in `$.CANARY": 1}, None,
     "the request has an unrecognized argument"),
    ("/v1/completions", {"best_of": 0}, "best_of", None),
    ("/v1/completions", {"n": 3, "best_of": 2}, "best_of", "best_of must be at least n"),
    ("/v1/chat/completions", {"modalities": ["text", "audio"]}, "modalities[1]", None),
    ("/v1/chat/completions", {"logit_bias": {"50256": 101}}, "logit_bias", None),
    ("/v1/chat/completions", {"logit_bias": {"token": 1}}, "logit_bias", "invalid key in 'logit_bias'"),
    ("/v1/chat/completions", {"reasoning_effort": "extreme"}, "reasoning_effort", None),
])
def test_parameters_not_served_are_refused_by_name(gateway: Gateway, api_key: str, path: str,
                                                    extra: dict[str, Any], param: str | None,
                                                    message: str | None) -> None:
    base = {"/v1/chat/completions": {"messages": _HI}, "/v1/completions": {"prompt": "a"},
            "/v1/embeddings": {"input": "a"}}[path]
    response = httpx.post(f"{gateway.url}{path}", json={"model": "fast-echo", **base, **extra},
                          timeout=30, headers={"Authorization": f"Bearer {api_key}"})
    error = _error(response)
    assert response.status_code == 400 and error["code"] == "invalid_request_error"
    assert error["param"] == param and "CANARY" not in response.text
    if message is not None:
        assert error["message"] == message


def test_best_of_counts_as_choices_for_the_policy(gateway: Gateway, api_key: str) -> None:
    # The default contract allows one choice: best_of=3 generates three.
    response = httpx.post(f"{gateway.url}/v1/completions", timeout=30,
                          json={"model": "fast-echo", "prompt": "a", "best_of": 3},
                          headers={"Authorization": f"Bearer {api_key}"})
    error = _error(response)
    assert response.status_code == 403 and "SG-TOKENS-002" in error["message"]


def test_an_earlier_audio_answer_is_a_stored_reference(gateway: Gateway, api_key: str) -> None:
    messages = [*_HI, {"role": "assistant", "audio": {"id": "audio_abc123"}}, *_HI]
    response = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30,
                          json={"model": "fast-echo", "messages": messages},
                          headers={"Authorization": f"Bearer {api_key}"})
    error = _error(response)
    assert response.status_code == 403 and error["code"] == "policy_denied"
    assert "SG-STORE-006" in error["message"]


@pytest.mark.parametrize("body", [
    b'{"model": "fast-echo", "messages": [{"role": "user", "content": "a"}], '
    b'"response_format": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}",
    b'{"model": "fast-echo", "messages": [{"role": "user", "content": "a"}], "x": '
    + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "fast-echo", "messages": [{"role": "user", "content": "a"}], "tools": [{"type": '
    b'"function", "function": {"name": "f", "parameters": ' + b'{"a": ' * 200 + b"1"
    + b"}" * 200 + b"}}]}",
])
def test_deeply_nested_json_is_a_400(gateway: Gateway, api_key: str, body: bytes) -> None:
    response = _post(gateway, "/v1/chat/completions", body, api_key)
    assert response.status_code == 400
    assert _error(response)["code"] in ("invalid_json", "invalid_request_error")
    refused = _post(gateway, "/v1/fine_tuning/jobs", body, api_key)
    assert refused.status_code == 403


# -- a client that leaves a whole (non-streamed) answer cancels the backend -------------------
def _leaving_request(gateway: Gateway, api_key: str, data: bytes, sealed: bool) -> bytes:
    """The raw HTTP/1.1 request a client sends before it goes away: plain, or sealed."""
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    if not sealed:
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
                + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    config = decode_key_configs(httpx.get(f"{gateway.url}{GATEWAY_PATH}").content)[0]
    inner = BHTTPRequest(b"POST", b"http", b"x", b"/v1/chat/completions", tuple(
        (k.encode(), v.encode()) for k, v in {**headers, "date": formatdate(usegmt=True)}.items()),
        data)
    body, _ = encapsulate_request(config, encode_request(inner))
    return (f"POST {GATEWAY_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: message/ohttp-req\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_client_leaving_whole_answer_cancels_backend(gateway: Gateway, api_key: str,
                                                     fast_upstream: Proc, sealed: bool) -> None:
    before = httpx.get(f"{fast_upstream.url}/stats").json()
    data = json.dumps({"model": "fast-echo", "messages": [{"role": "user", "content": "go"}],
                       "max_tokens": 300, "temperature": 1.0}).encode()  # 3 s upstream
    seen = len(gateway.output().splitlines())
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(_leaving_request(gateway, api_key, data, sealed))
        time.sleep(0.5)
    after = _once_risen(fast_upstream, before, "whole_cancelled")
    assert after["whole_cancelled"] == before["whole_cancelled"] + 1
    assert after["whole_finished"] == before["whole_finished"]
    line = next(json.loads(x) for x in gateway.output().splitlines()[seen:]
                if '"status": 499' in x and '"event": "request"' in x)
    completion = request_records(gateway, api_key, line["request_id"])["completion"]
    assert completion["status"] == 499 and completion["abort_reason"] == "client_disconnected"
    assert "Traceback" not in gateway.output()


def test_a_websocket_upgrade_is_plain_http_and_echoes_nothing(gateway: Gateway) -> None:
    """No route serves WebSockets: an upgrade is an ordinary request (here refused for its
    missing key), and a handshake library never answers it by quoting a header."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: CANARY-ws-key\r\n"
                     b"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 401 ") and b"CANARY" not in head


def test_errors_after_admission_name_the_request(gateway: Gateway, api_key: str) -> None:
    response = _post(gateway, "/v1/chat/completions",
                     b'{"model": "down-model", "messages": [{"role": "user", "content": "a"}]}',
                     api_key)
    assert response.status_code == 503 and response.headers["sealgate-receipt"]
    records = request_records(gateway, api_key, response.headers["x-request-id"])
    assert records["intent"]["decision"] == "allow"
    assert records["completion"]["status"] == 503
