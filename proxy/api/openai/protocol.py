"""Request schemas of the OpenAI endpoints (msgspec: validation and decoding in one pass).

Only the fields Sealgate forwards or decides on are declared; unknown fields are ignored and
never forwarded, so nothing unexpected reaches a backend.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from proxy.errors import InvalidJSON, InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "decode_request",
]

# Bounded to integers every policy engine compares exactly (I-JSON, RFC 7493 §2.2).
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
TopP = Annotated[float, msgspec.Meta(ge=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _Sampling(msgspec.Struct, frozen=True, omit_defaults=True):
    model: ModelName
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None
    # Fields that matter to policy (state kept by the provider, training-shaped metadata).
    store: bool | None = None
    metadata: dict[str, str] | None = None


class ChatCompletionRequest(_Sampling, frozen=True, omit_defaults=True, kw_only=True):
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None


class CompletionRequest(_Sampling, frozen=True, omit_defaults=True, kw_only=True):
    prompt: str | list[str | int | list[int]]
    echo: bool | None = None
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    suffix: str | None = None


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    model: ModelName
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None


T = TypeVar("T")
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _uniform(value: Any, param: str) -> None:
    """A prompt/input list is all strings, all token ids, or all token-id lists (one kind)."""
    if isinstance(value, list):
        if not value:
            raise InvalidRequest("must not be empty", param=param)
        if len({type(item) for item in value}) > 1:
            raise InvalidRequest("mixes strings and token ids", param=param)


def decode_request(body: bytes, schema: type[T]) -> T:
    """Decode and validate; errors name the offending parameter, never echo values."""
    if not body:
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        request = msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        param = match.group(1) if match else None
        if "Object missing required field" in text:
            field = text.split("`")[1] if "`" in text else None
            param = f"{param}.{field}" if param and field else field
        # msgspec quotes offending values in some messages; values may be content, drop them.
        message = " ".join(_QUOTED.sub("", text.split(" - at ")[0]).split())
        raise InvalidRequest(message, param=param) from exc
    except msgspec.DecodeError as exc:
        raise InvalidJSON("the request body is not valid JSON") from exc
    for param in ("prompt", "input"):
        _uniform(getattr(request, param, None), param)
    return request
