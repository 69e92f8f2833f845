"""The OpenAI-compatible API driven by the official ``openai`` SDK over a real server."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import MODEL
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
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


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
])
def test_schema_violation_names_param(gateway: Gateway, api_key: str, body: bytes, param: str) -> None:
    response = _post(gateway, "/v1/chat/completions", body, api_key)
    error = _error(response)
    assert response.status_code == 400
    assert error["code"] == "invalid_request_error" and error["param"] == param
    assert "wizard" not in error["message"] and "many" not in error["message"]


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


def test_client_disconnect_cancels_backend(gateway: Gateway, api_key: str, fast_upstream: Proc) -> None:
    before = httpx.get(f"{fast_upstream.url}/stats").json()
    body = {"model": "fast-echo", "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 2000, "temperature": 1.0, "stream": True}  # 10 ms per chunk upstream
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {api_key}"}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = httpx.get(f"{fast_upstream.url}/stats").json()
        if after["streams_cancelled"] > before["streams_cancelled"]:
            break
        time.sleep(0.1)
    assert after["streams_cancelled"] == before["streams_cancelled"] + 1
    assert after["streams_finished"] == before["streams_finished"]


def test_health_and_openapi(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.json()["backends"]["local"] is True
    assert ready.json()["backends"]["down"] is False and ready.status_code == 503
    schema = httpx.get(f"{gateway.url}/schema/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/embeddings" in schema["paths"]
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'sealgate_requests_total{endpoint="/v1/chat/completions"' in metrics
    assert "sealgate_tokens_total" in metrics
