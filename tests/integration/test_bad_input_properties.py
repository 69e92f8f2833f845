"""Invariant 5 over HTTP: whatever a client sends, the gateway answers 2xx or a 4xx OpenAI error
envelope with a string code, never a 5xx, a stack trace or a hang.

Requests are valid ones with one value replaced, removed or added somewhere in the body (any
JSON value, at any depth), sent plain to the development gateway, and inner requests of every
shape sent sealed to it. The model is the fast upstream (a measurement tool), so the examples
exercise the gateway's own handling: parsing, validation, policy input, forwarding, shaping.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.ohttp import (
    BHTTPRequest,
    decode_key_configs,
    decode_response,
    encapsulate_request,
    encode_request,
)
from tests.server import Gateway

EXAMPLES = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "fast-echo", "max_tokens": 4, "n": 1, "seed": 1, "stop": ["x"],
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "metadata": {"team": "a"}, "logit_bias": {"1": 2}, "temperature": 1, "top_p": 1,
    },
    "/v1/completions": {"model": "fast-echo", "prompt": "hi", "max_tokens": 4, "best_of": 1,
                        "n": 1, "echo": False, "logprobs": None, "suffix": None},
    "/v1/embeddings": {"model": "fast-echo", "input": ["hi", "there"],
                       "encoding_format": "float", "dimensions": 8},
}

_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
         | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=16))
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _mutated(doc: dict[str, Any], steps: list[int], value: Any, how: int) -> dict[str, Any]:
    """``doc`` with one change: following ``steps`` down into containers, replace (0), remove
    (1) or add beside (2) the value reached."""
    doc = copy.deepcopy(doc)
    node: Any = doc
    for step in steps:
        keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = keys[step % len(keys)]
        if isinstance(node[key], dict | list) and step % 3:
            node = node[key]
            continue
        if how == 1 and isinstance(node, dict):
            del node[key]
        elif how == 2 and isinstance(node, dict):
            node[f"{key}_{step}"] = value
        else:
            node[key] = value
        return doc
    if isinstance(node, dict):
        node["extra"] = value
    return doc


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as session:
        yield session


def _assert_envelope(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"], response.text
        assert isinstance(error["message"], str) and "Traceback" not in error["message"]


@EXAMPLES
@given(path=st.sampled_from(sorted(BODIES)), steps=st.lists(st.integers(0, 30), max_size=5),
       value=_json, how=st.integers(0, 2), stream=st.booleans())
def test_mutated_request_bodies_get_an_answer_or_a_4xx(gateway: Gateway, api_key: str,
                                                       client: httpx.Client, path: str,
                                                       steps: list[int], value: Any, how: int,
                                                       stream: bool) -> None:
    body = _mutated(BODIES[path], steps, value, how)
    streamed = stream and path != "/v1/embeddings"
    if streamed:
        body.update(stream=True, stream_options={"include_usage": True})
    response = client.post(f"{gateway.url}{path}", content=json.dumps(body),
                           headers={"Authorization": f"Bearer {api_key}",
                                    "Content-Type": "application/json"})
    _assert_envelope(response)
    if response.status_code == 200 and streamed:
        assert response.text.rstrip().endswith("data: [DONE]"), response.text


_token = st.binary(max_size=12)
_names = st.sampled_from([b"authorization", b"content-type", b"content-length", b"date", b"host",
                          b"transfer-encoding", b"connection", b"te", b"cookie",
                          b"x-request-id", b"Authorization", b"DATE"]) | st.binary(min_size=1,
                                                                                     max_size=12)
_paths = st.sampled_from([b"/v1/chat/completions", b"/v1/models", b"/v1/models/fast-echo",
                          b"/v1/embeddings", b"/v1/completions", b"/.well-known/ohttp-gateway",
                          b"//v1/chat/completions", b"/v1/chat/completions?x=1",
                          b"/v1/../v1/models", b"/v1/chat%2fcompletions", b"/healthz",
                          b"/dashboard", b"*", b""]) | _token
_methods = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"get"]) | _token
_contents = st.sampled_from([
    b"", b"{", b"[]", json.dumps(BODIES["/v1/chat/completions"]).encode(),
    json.dumps({**BODIES["/v1/chat/completions"], "stream": True}).encode(),
    json.dumps(BODIES["/v1/embeddings"]).encode()])


@EXAMPLES
@given(method=_methods, scheme=st.sampled_from([b"https", b"http", b"ftp", b""]),
       authority=st.sampled_from([b"", b"gateway", b"other.example"]), path=_paths,
       extra=st.lists(st.tuples(_names, _token), max_size=3), with_key=st.booleans(),
       dated=st.booleans(), content=_contents)
def test_sealed_inner_requests_of_any_shape_get_a_sealed_4xx_at_worst(
        gateway: Gateway, api_key: str, client: httpx.Client, method: bytes, scheme: bytes, authority: bytes,
        path: bytes, extra: list[tuple[bytes, bytes]], with_key: bool, dated: bool,
        content: bytes) -> None:
    config = decode_key_configs(client.get(f"{gateway.url}/.well-known/ohttp-gateway").content)[0]
    headers = [(b"content-type", b"application/json"), *extra]
    if with_key:
        headers.append((b"authorization", f"Bearer {api_key}".encode()))
    if dated:
        headers.append((b"date", formatdate(usegmt=True).encode()))
    inner = encode_request(BHTTPRequest(method, scheme, authority, path, tuple(headers), content))
    sealed, context = encapsulate_request(config, inner)
    outer = client.post(f"{gateway.url}/.well-known/ohttp-gateway", content=sealed,
                        headers={"Content-Type": "message/ohttp-req"})
    assert outer.status_code == 200, outer.text  # a well-formed encapsulation is always opened
    answer = decode_response(context.open_response(outer.content))
    assert answer.status < 500, answer.content
    if answer.status >= 400 and answer.content:
        error = json.loads(answer.content)["error"]
        assert isinstance(error["code"], str) and error["code"], answer.content
