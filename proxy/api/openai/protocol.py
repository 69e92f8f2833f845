"""Request schemas of the OpenAI endpoints (msgspec: validation and decoding in one pass).

Only the fields Sealgate forwards or decides on are declared. A request naming any other
top-level parameter is refused (400, as the OpenAI API itself answers "unrecognized request
argument"), so no parameter is silently dropped and nothing unexpected reaches a backend;
undeclared fields inside messages and content parts are dropped.
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
# logit_bias: token ids (as decimal strings) to a bias in [-100, 100].
# Patterns end in \Z, not $: a pattern is searched, and $ also matches before a final newline.
TokenId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,10}\Z")]
LogitBias = dict[TokenId, Annotated[int, msgspec.Meta(ge=-100, le=100)]]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
# Prompt token ids: backends hold them as 32-bit integers, and llama.cpp wraps a larger one
# silently into another token.
PromptTokenId = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Prompt = str | list[str | PromptTokenId | list[PromptTokenId]]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# The OpenAI API's metadata limits: 16 pairs, keys of 64 characters, values of 512. Keys reach
# the policy (SG-STORE-004), so they are printable text too.
Metadata = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*\Z")],
         Annotated[str, msgspec.Meta(max_length=512)]],
    msgspec.Meta(max_length=16),
]


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


# JSON Schemas (tool parameters, response formats) are the only free-form JSON forwarded; their
# depth is bounded so that no later encoding step of this request can exhaust the stack.
MAX_SCHEMA_DEPTH = 32
_TOO_DEEP = "JSON Schema nested too deeply"
_BEST_OF = "best_of must be at least n"
_STREAM_OPTIONS = "stream_options is only allowed when stream is true"
_TOP_LOGPROBS = "top_logprobs is only allowed when logprobs is true"


def _check_depth(value: object) -> None:
    level = [value]
    for _ in range(MAX_SCHEMA_DEPTH):
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict)
                               else node if isinstance(node, list) else ())]
        if not level:
            return
    raise ValueError(_TOO_DEEP)  # msgspec turns it into a ValidationError at this field


# -- chat messages: a tagged union on ``role``, content parts a tagged union on ``type`` ------
# Only the declared fields of each part are forwarded (decoding drops the rest).
# Data URLs only (RFC 2397, scheme case-insensitive): the backend never fetches from the network.
DataURL = Annotated[str, msgspec.Meta(pattern="^[dD][aA][tT][aA]:")]


class TextPart(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    text: str


class ImageURL(msgspec.Struct, frozen=True, omit_defaults=True):
    url: DataURL
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(msgspec.Struct, frozen=True, tag_field="type", tag="image_url"):
    image_url: ImageURL


class InputAudio(msgspec.Struct, frozen=True):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(msgspec.Struct, frozen=True, tag_field="type", tag="input_audio"):
    input_audio: InputAudio


class FileRef(msgspec.Struct, frozen=True, omit_defaults=True):
    file_data: str | None = None
    file_id: str | None = None
    """A file kept by the provider: the policy denies it (SG-STORE-006)."""
    filename: str | None = None


class FilePart(msgspec.Struct, frozen=True, tag_field="type", tag="file"):
    file: FileRef


class RefusalPart(msgspec.Struct, frozen=True, tag_field="type", tag="refusal"):
    refusal: str


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    type: Literal["function"]
    function: FunctionCall


class _Message(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="role"):
    name: str | None = None


class SystemMessage(_Message, frozen=True, omit_defaults=True, tag="system", kw_only=True):
    content: str | list[TextPart]


class DeveloperMessage(_Message, frozen=True, omit_defaults=True, tag="developer", kw_only=True):
    content: str | list[TextPart]


class UserMessage(_Message, frozen=True, omit_defaults=True, tag="user", kw_only=True):
    content: str | list[TextPart | ImagePart | AudioPart | FilePart]


class AudioRef(msgspec.Struct, frozen=True):
    id: str


class AssistantMessage(_Message, frozen=True, omit_defaults=True, tag="assistant", kw_only=True):
    content: str | list[TextPart | RefusalPart] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # The legacy call that a ``function`` message answers (deprecated, still in the API).
    function_call: FunctionCall | None = None
    # A previous audio answer kept by the provider: a stored reference (policy SG-STORE-006).
    audio: AudioRef | None = None


class ToolMessage(msgspec.Struct, frozen=True, tag_field="role", tag="tool"):
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(msgspec.Struct, frozen=True, tag_field="role", tag="function"):
    name: str
    content: str | None


ChatMessage = (SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage
               | FunctionMessage)


# -- tools and response formats: the OpenAI shapes; other tool types are refused -----------
class FunctionDefinition(msgspec.Struct, frozen=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def __post_init__(self) -> None:
        _check_depth(self.parameters)


class FunctionTool(msgspec.Struct, frozen=True):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    pass


class JSONObjectFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_object"):
    pass


class JSONSchema(msgspec.Struct, frozen=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None

    def __post_init__(self) -> None:
        _check_depth(self.schema)


class ConversationRef(msgspec.Struct, frozen=True):
    id: str


class JSONSchemaFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_schema"):
    json_schema: JSONSchema


class _Sampling(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    model: ModelName
    stream: bool | None = None  # nullable in the OpenAI API, as n is
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None  # the contract's max_n limits it
    stop: str | list[str] | None = None
    seed: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None
    logit_bias: LogitBias | None = None
    # Sampling extensions that vLLM and llama.cpp both take (not OpenAI parameters); -1 or 0
    # turns top-k off.
    top_k: Annotated[int, msgspec.Meta(ge=-1, le=2**31 - 1)] | None = None
    min_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    # Fields that matter to policy (state kept by the provider, training-shaped metadata).
    store: bool | None = None
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        if self.stream_options is not None and not self.stream:  # as the OpenAI API refuses it
            raise ValueError(_STREAM_OPTIONS)


class ChatCompletionRequest(_Sampling, frozen=True, omit_defaults=True, kw_only=True):
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    response_format: TextFormat | JSONObjectFormat | JSONSchemaFormat | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    # Text is the one output modality served.
    modalities: list[Literal["text"]] | None = None
    # End-user and cache-routing identifiers: accepted, never forwarded (as ``user``).
    safety_identifier: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_logprobs is not None and self.logprobs is not True:  # as the OpenAI API
            raise ValueError(_TOP_LOGPROBS)


class CompletionRequest(_Sampling, frozen=True, omit_defaults=True, kw_only=True):
    prompt: Prompt
    echo: bool | None = None
    # Candidates generated server-side, the best returned: at least ``n``; the policy counts
    # them as choices (SG-TOKENS-002).
    best_of: Annotated[int, msgspec.Meta(ge=1, le=20)] | None = None
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    suffix: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise ValueError(_BEST_OF)


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    model: ModelName
    input: Prompt
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None


T = TypeVar("T")
# msgspec appends the location as " - at `$.path`"; paths hold field names and indices only
# (mapping keys are shown as [...]). Messages are never taken from msgspec's text, which can
# quote the offending value: only its fixed opening words pick one of the messages below.
_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(\w+)`")
_WRONG_TYPE = re.compile(r"Expected `[^`]*`, got `[^`]*`")
_OUT_OF_RANGE = re.compile(r"Expected `[^`]*` [<>]=? -?\d|Number out of range|Integer value out of range")
_LENGTH = re.compile(r"Expected `[^`]*` of length [<>]=? \d")
_DATA_URL = re.compile(r"Expected `str` matching regex '\^\[dD\]\[aA\]")
_KEY_AT = re.compile(r" - at `key` in `\$\.?([^`]*)`$")
_UNKNOWN = "Object contains unknown field `"
# An unrecognized parameter is named in the error only when it is a parameter name known from
# the OpenAI API or the common serving engines: any other name is request text like the rest,
# and could carry content ("patient_x_hiv_positive" is an identifier too).
_KNOWN_PARAMETERS = frozenset({
    # OpenAI: chat completions, completions and embeddings
    "audio", "best_of", "dimensions", "echo", "encoding_format", "frequency_penalty",
    "function_call", "functions", "input", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "messages", "metadata", "modalities", "model", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt", "prompt_cache_key",
    "prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format",
    "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
    "suffix", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options", "previous_response_id", "conversation", "reasoning", "include",
    # vLLM, llama.cpp, TGI and other engines' extensions
    "repetition_penalty", "top_k", "min_p", "typical_p", "length_penalty", "use_beam_search",
    "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
    "structured_outputs", "grammar", "json_schema", "cache_prompt", "id_slot", "mirostat",
    "mirostat_tau", "mirostat_eta", "truncate_prompt_tokens", "add_special_tokens",
    "add_generation_prompt", "continue_final_message", "chat_template", "chat_template_kwargs",
    "documents", "priority", "request_id", "return_tokens_as_token_ids", "kv_transfer_params",
    "include_reasoning", "thinking", "task", "instruction", "normalize", "truncate",
})


def _unrecognized(body: bytes, schema: type[Any]) -> InvalidRequest:
    """The first top-level key the schema does not declare, named when it is an identifier.
    Found from the body itself: msgspec quotes the key unescaped, so its text can imitate a
    location, and nothing is taken from it."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        doc = None
    declared = set(schema.__struct_fields__)
    names = sorted(k for k in doc if k not in declared) if isinstance(doc, dict) else []
    if names and names[0] in _KNOWN_PARAMETERS:
        return InvalidRequest(f"unrecognized request argument '{names[0]}'", param=names[0])
    return InvalidRequest("the request has an unrecognized argument")


def _validation_error(text: str) -> InvalidRequest:
    if key := _KEY_AT.search(text):
        param = key.group(1) or None
        return InvalidRequest(f"invalid key in '{param}'" if param else "invalid key", param=param)
    match = _AT.search(text)
    param = match.group(1) or None if match else None
    head = text[:match.start()] if match else text
    if missing := _MISSING.match(head):
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
        return InvalidRequest(f"missing required parameter '{param}'", param=param)
    if head == _BEST_OF:
        return InvalidRequest(_BEST_OF, param="best_of")
    if head == _STREAM_OPTIONS:
        return InvalidRequest(_STREAM_OPTIONS, param="stream_options")
    if head == _TOP_LOGPROBS:
        return InvalidRequest(_TOP_LOGPROBS, param="top_logprobs")
    if param is not None and "[...]" in param:  # inside a map (logit_bias, metadata): the map
        param = param[:param.index("[...]")]
    where = f"'{param}'" if param else "the request body"
    if param is None and _WRONG_TYPE.match(head):
        message = "the request body must be a JSON object"
    elif head == _TOO_DEEP:
        message = f"{where}: JSON Schema nested more than {MAX_SCHEMA_DEPTH} levels deep"
    elif _WRONG_TYPE.match(head):
        message = f"invalid type for {where}"
    elif _OUT_OF_RANGE.match(head):
        message = f"{where} is out of range"
    elif _LENGTH.match(head):
        message = f"{where} is too short or too long"
    elif _DATA_URL.match(head):
        message = f"{where} must be a data: URL; the backend never fetches from the network"
    else:
        message = f"invalid value for {where}"
    return InvalidRequest(message, param=param)


def _uniform(value: Any, param: str) -> None:
    """A prompt/input list is all strings, all token ids, or all token-id lists (one kind), and
    none of its token-id lists is empty; an embedding input is no empty string either (the
    OpenAI API refuses both)."""
    if isinstance(value, list):
        if not value:
            raise InvalidRequest("must not be empty", param=param)
        if len({type(item) for item in value}) > 1:
            raise InvalidRequest("mixes strings and token ids", param=param)
        for position, item in enumerate(value):
            if item == [] or (param == "input" and item == ""):
                raise InvalidRequest("must not be empty", param=f"{param}[{position}]")
    elif param == "input" and value == "":
        raise InvalidRequest("must not be empty", param=param)


def decode_request(body: bytes, schema: type[T]) -> T:
    """Decode and validate; errors name the offending parameter, never echo values."""
    if not body:
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        request = msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith(_UNKNOWN):  # only top-level structs refuse unknown fields
            raise _unrecognized(body, schema) from None
        raise _validation_error(text) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec reports bad UTF-8 as the latter
        raise InvalidJSON("the request body is not valid JSON (UTF-8)") from None
    except RecursionError:
        raise InvalidJSON("the request body is nested too deeply") from None
    for param in ("prompt", "input"):
        _uniform(getattr(request, param, None), param)
    return request
