"""The OpenAPI document at ``/schema``, completed with what the framework cannot see.

The OpenAI routes read their bodies themselves (``decode_request``: exact errors, no echoed
values), so the framework knows neither their request schemas nor their answers. Added here:
each content endpoint's request body (the very msgspec schemas the gateway validates with),
the tenant's bearer key, the error envelope every failure is answered with (also replacing
the framework's own 400 shape, which the gateway never sends), the SSE answer of streamed
generations, model ids as plain strings, and the key configuration's media type.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin

from proxy.api.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

__all__ = ["JsonDocument", "YamlDocument", "completed"]

_REF = "#/components/schemas/{name}"
_BODIES = {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest,
           "/v1/embeddings": EmbeddingRequest}
_STREAMED = ("/v1/chat/completions", "/v1/completions")
_ERROR = {
    "type": "object", "required": ["error"],
    "description": "The OpenAI error envelope: every failure's answer (docs/protocol.md).",
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": "string"}}}},
}
_FAILURES = {
    "400": "invalid JSON (invalid_json) or a parameter the schema refuses (invalid_request_error, "
           "param names it)",
    "401": "no API key, or one that is not valid (invalid_api_key)",
    "403": "plaintext where the sealed channel is required (sealed_channel_required), or the "
           "policy denied the request (policy_denied, with its rule ids)",
    "404": "the model is not served to this tenant (model_not_found)",
    "413": "the request body is larger than the limit (request_too_large)",
    "429": "past a tenant limit or the upstream's (Retry-After says when to retry)",
    "502": "the backend answered something malformed (backend_error)",
    "503": "backend, policy engine or audit log unavailable (fail closed; Retry-After)",
}
_SECURITY = {"type": "http", "scheme": "bearer",
             "description": "A tenant API key (sg-...), sent inside the sealed request."}
_OHTTP_KEYS = "application/ohttp-keys"
_FRAMEWORK_400 = "Bad request syntax or unsupported method"  # the framework's own 400


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name="Error")}}}


def _openai_operation(path: str, method: str, op: dict[str, Any]) -> None:
    op["security"] = [{"bearer": []}]
    responses = op.setdefault("responses", {})
    for status, description in _FAILURES.items():
        if status == "404" and "{model_id}" not in path and method == "get":
            continue
        responses[status] = {"description": description, "content": _error_content()}
    schema = _BODIES.get(path)
    if method == "post" and schema is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(name=schema.__name__)}}}}
    if path in _STREAMED:
        ok = responses.setdefault("200", {"description": "the answer"})
        ok["description"] = ("the answer; with \"stream\": true a text/event-stream of "
                             "`data: <chunk>` events ending with `data: [DONE]`")
        ok.setdefault("content", {})["text/event-stream"] = {"schema": {"type": "string"}}


def completed(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (the framework's) with the request bodies, errors and security added."""
    doc = copy.deepcopy(document)
    _, schemas = msgspec.json.schema_components(list(_BODIES.values()), ref_template=_REF)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update({**schemas, "Error": _ERROR})
    components.setdefault("securitySchemes", {})["bearer"] = _SECURITY
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, answer in op["responses"].items():
                if status.startswith("4") and answer.get("description") == _FRAMEWORK_400:
                    answer["content"] = _error_content()
            if path.startswith("/v1/") and not path.startswith("/v1/audit/"):
                _openai_operation(path, method, op)
            for parameter in op.get("parameters", ()):
                if parameter.get("name") == "model_id":
                    parameter["schema"] = {"type": "string"}
            if path == "/.well-known/ohttp-gateway" and method == "get":
                ok = op["responses"].get("200", {})
                ok["content"] = {_OHTTP_KEYS: {"schema": {"type": "string",
                                                          "contentEncoding": "binary"}}}
    return doc


class JsonDocument(JsonRenderPlugin):
    """``/schema/openapi.json``, completed (``completed``)."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, completed(openapi_schema))


class YamlDocument(YamlRenderPlugin):
    """``/schema/openapi.yaml``, completed (``completed``)."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, completed(openapi_schema))
