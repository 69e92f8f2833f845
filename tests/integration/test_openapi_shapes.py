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
