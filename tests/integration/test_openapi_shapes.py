"""Responses validate against the official OpenAI OpenAPI spec (shared vectors)."""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from tests.conftest import vector_path
from tests.integration.conftest import MODEL
from tests.server import Gateway


def _nullable(node: Any) -> Any:
    """The spec still marks some fields with OpenAPI 3.0's ``nullable: true``; JSON Schema
    2020-12 ignores that keyword, so spell it out as ``anyOf [..., null]``."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def _components() -> dict[str, Any]:
    path = vector_path("openai", "openapi.yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return dict(_nullable(yaml.load(path.read_text(), Loader=loader)["components"]))


def validate(name: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": _components()}
    jsonschema.Draft202012Validator(schema).validate(instance)


@pytest.fixture
def post(gateway: Gateway, api_key: str) -> Any:
    def call(path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{gateway.url}{path}", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {api_key}"})
    return call


def test_chat_completion_shape(post: Any) -> None:
    response = post("/v1/chat/completions", {"model": MODEL, "max_tokens": 6,
                                             "messages": [{"role": "user", "content": "Hi"}]})
    validate("CreateChatCompletionResponse", response.json())


def test_chat_stream_chunk_shapes(gateway: Gateway, api_key: str) -> None:
    body = {"model": MODEL, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(event))


def test_completion_shape(post: Any) -> None:
    response = post("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 4})
    validate("CreateCompletionResponse", response.json())


def test_embedding_shape(post: Any) -> None:
    validate("CreateEmbeddingResponse", post("/v1/embeddings", {"model": MODEL, "input": "x"}).json())


def test_models_shape(gateway: Gateway, api_key: str) -> None:
    response = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {api_key}"})
    validate("ListModelsResponse", response.json())


def test_error_shape(post: Any) -> None:
    response = post("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    validate("ErrorResponse", response.json())


# -- the gateway's own OpenAPI document (/schema) ----------------------------------------------
@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    answer = httpx.get(f"{gateway.url}/schema/openapi.json")
    assert answer.status_code == 200
    served: dict[str, Any] = answer.json()
    assert yaml.safe_load(httpx.get(f"{gateway.url}/schema/openapi.yaml").text) == served
    return served


def _body_schema(document: dict[str, Any], path: str) -> jsonschema.Draft202012Validator:
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**ref, "components": document["components"]})


@pytest.mark.parametrize(("path", "valid", "invalid"), [
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
     {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4}, {"model": MODEL}),
    ("/v1/embeddings", {"model": MODEL, "input": ["a", "b"]},
     {"model": MODEL, "input": "a", "encoding_format": "hex"}),
])
def test_the_document_names_each_request_body_the_gateway_validates(
        document: dict[str, Any], post: Any, path: str, valid: dict[str, Any],
        invalid: dict[str, Any]) -> None:
    """The request bodies are the schemas the gateway validates with: what the document admits
    the gateway takes, and what it refuses the gateway answers 400."""
    schema = _body_schema(document, path)
    assert schema.is_valid(valid) and not schema.is_valid(invalid)
    assert post(path, valid).status_code == 200
    assert post(path, invalid).status_code == 400


def test_the_document_says_how_the_api_answers_and_authenticates(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    envelope = jsonschema.Draft202012Validator(document["components"]["schemas"]["Error"])
    assert envelope.is_valid({"error": {"message": "m", "type": "t", "param": None, "code": "c"}})
    for path in ("/v1/models", "/v1/models/{model_id}", "/v1/chat/completions",
                 "/v1/completions", "/v1/embeddings"):
        ((_, operation),) = document["paths"][path].items()
        assert operation["security"] == [{"bearer": []}], path
        for status in ("400", "401", "403", "413", "429", "503"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, status)
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert "text/event-stream" in document["paths"][path]["post"]["responses"]["200"]["content"]
    (model_id,) = document["paths"]["/v1/models/{model_id}"]["get"]["parameters"]
    assert model_id["schema"] == {"type": "string"}  # names hold "/", and are no URIs
    keys = document["paths"]["/.well-known/ohttp-gateway"]["get"]["responses"]["200"]["content"]
    assert list(keys) == ["application/ohttp-keys"]
    # Nowhere the framework's own 400 shape, which the gateway never sends.
    assert '"status_code"' not in json.dumps(document["paths"])
