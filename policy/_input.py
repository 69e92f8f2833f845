"""The policy input document: what the policy may know about a request (never its content).

The document's shape is fixed by ``policy/schema/input.schema.json`` (docs/policy.md). Only
parameters that decide retention, training use or tenant limits are carried; message text,
prompts, tool definitions and metadata *values* never enter it.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ._errors import PolicyInputError

__all__ = ["PolicyInput", "RequestParams"]

Channel = Literal["sealed", "plaintext"]
Mode = Literal["production", "development"]

# RFC 3339 §5.6 restricted to UTC and whole seconds, so that instants compare as strings.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TOKEN_LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Integers every engine represents exactly (I-JSON, RFC 7493 §2.2). rego-cpp keeps 64 bits and
# silently wraps wider values, so an unbounded limit could compare as a small one.
MAX_SAFE_INTEGER = 2**53 - 1
# Request metadata as the OpenAI API bounds it. Its keys reach the policy (SG-STORE-004), so
# they are also printable: a NUL would end the string early in a C engine and hide a term.
MAX_METADATA_PAIRS, MAX_METADATA_KEY = 16, 64
# NFKD makes at most 18 characters of one (U+FDFA): the longest a folded key can be.
MAX_FOLDED_KEY = 18 * MAX_METADATA_KEY
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")
METADATA_LIMITS = (f"metadata has at most {MAX_METADATA_PAIRS} keys of at most "
                   f"{MAX_METADATA_KEY} printable characters")


def is_instant(text: str) -> bool:
    """``YYYY-MM-DDTHH:MM:SSZ`` (ASCII digits) names a real instant: such strings compare in
    time order, which the policy relies on."""
    try:
        dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def utc_now() -> str:
    """The current instant in the input document's time format."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(cond: bool, detail: str) -> None:
    if not cond:
        raise PolicyInputError(detail)


def _opt_int(body: Mapping[str, Any], key: str, lenient: bool) -> int | None:
    value = body.get(key)
    ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER
    if value is None or (lenient and not ok):
        return None
    _check(isinstance(value, int) and not isinstance(value, bool), f"{key} must be an integer")
    return int(value)


def _stored_reference(body: Mapping[str, Any]) -> bool:
    """A chat message refers to something kept by the provider: a content part's file
    (``file.file_id``; inline ``file_data`` is content, not a reference) or an assistant
    message's earlier audio answer (``audio.id``)."""
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        audio = message.get("audio")
        if isinstance(audio, Mapping) and audio.get("id") not in (None, ""):
            return True
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            file = part.get("file") if isinstance(part, Mapping) else None
            if isinstance(file, Mapping) and file.get("file_id") not in (None, ""):
                return True
    return False


def _metadata_keys(body: Mapping[str, Any], lenient: bool) -> tuple[str, ...]:
    """The ``metadata`` keys, folded (``fold_key``) and sorted. Metadata holds at most 16 pairs
    whose keys are printable text of at most 64 characters (the OpenAI API's limits, which the
    request schema enforces); a map beyond them is an error, or counts as absent under
    ``lenient``."""
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return ()
    keys = tuple(k for k in metadata if isinstance(k, str))
    if len(keys) == len(metadata) and _metadata_ok(keys):
        return tuple(sorted(fold_key(k) for k in keys))
    _check(lenient, METADATA_LIMITS)
    return ()


def fold_key(key: str) -> str:
    """A metadata key as the policy matches it: compatibility-decomposed (NFKD: ligatures and
    full-width letters become plain ones), combining marks dropped, lowercased, so that
    ``FİNE_TUNE``, ``ﬁnetune`` and ``Évals`` read as ``fine_tune``, ``finetune`` and ``evals``.
    The policy lowercases keys as well, and the engines do not agree on it beyond ASCII
    (rego-cpp lowercases ASCII only, OPA all of Unicode); folded keys are already lowercase,
    so both match them alike. Letters that only look Latin (Cyrillic a, U+0430) stay as they are."""
    decomposed = unicodedata.normalize("NFKD", key)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _metadata_ok(keys: tuple[str, ...], limit: int = MAX_METADATA_KEY) -> bool:
    return len(keys) <= MAX_METADATA_PAIRS and all(
        len(k) <= limit and _PRINTABLE.fullmatch(k) for k in keys)


def _present(body: Mapping[str, Any], key: str) -> bool:
    return body.get(key) not in (None, "")


@dataclass(frozen=True, slots=True)
class RequestParams:
    """The request parameters the policy reads; built from a request body by ``from_body``."""

    stream: bool = False
    """``stream`` is true."""
    store: bool | None = None
    """``store`` as sent; ``None`` when absent."""
    max_tokens: int | None = None
    """Largest of ``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``, if any."""
    n: int | None = None
    """Number of choices asked for; ``None`` when absent."""
    previous_response_id: bool = False
    """A ``previous_response_id`` is present (its value is not carried)."""
    conversation: bool = False
    """A ``conversation`` object or id is present (its value is not carried)."""
    metadata_keys: tuple[str, ...] = ()
    """Keys of ``metadata``, folded (``fold_key``) and sorted; values are never carried."""
    purpose: str | None = None
    """``purpose`` of a file or upload request."""
    stored_references: bool = False
    """Some content part refers to a file kept by the provider (its id is not carried)."""

    def __post_init__(self) -> None:
        _check(isinstance(self.stream, bool), "stream must be a boolean")
        _check(self.store is None or isinstance(self.store, bool), "store must be a boolean")
        for name in ("max_tokens", "n"):
            value = getattr(self, name)
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            _check(ok, f"{name} must be an integer")
            _check(value is None or abs(value) <= MAX_SAFE_INTEGER,
                   f"{name} must be between -(2**53 - 1) and 2**53 - 1")
        _check(isinstance(self.previous_response_id, bool), "previous_response_id must be a bool")
        _check(isinstance(self.conversation, bool), "conversation must be a boolean")
        _check(
            isinstance(self.metadata_keys, tuple) and all(isinstance(k, str) for k in self.metadata_keys),
            "metadata_keys must be a tuple of strings",
        )
        _check(_metadata_ok(self.metadata_keys, MAX_FOLDED_KEY),
               f"metadata_keys has at most {MAX_METADATA_PAIRS} printable keys of at most "
               f"{MAX_FOLDED_KEY} characters")
        _check(self.purpose is None or (isinstance(self.purpose, str) and "\x00" not in self.purpose),
               "purpose must be a string without NUL characters")
        _check(isinstance(self.stored_references, bool), "stored_references must be a boolean")

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, lenient: bool = False) -> RequestParams:
        """Extract the policy-relevant parameters of an OpenAI request body (JSON or form).

        ``lenient`` (bodies of endpoints that are never forwarded, which no schema checked):
        a token limit, ``n`` or ``best_of`` that is not an integer within ±(2**53 - 1) counts as absent
        instead of being an error, and a NUL in ``purpose`` becomes U+FFFD, so such a request
        still gets a decision and a record."""
        store = body.get("store")
        # A non-boolean ``store`` is treated as a request to store: the conservative reading.
        store_flag = store if isinstance(store, bool) or store is None else True
        limits = [v for v in (_opt_int(body, k, lenient) for k in _TOKEN_LIMIT_KEYS) if v is not None]
        # ``best_of`` candidates are generated like ``n`` choices (only the best is returned).
        choices = [v for v in (_opt_int(body, k, lenient) for k in ("n", "best_of")) if v is not None]
        keys = _metadata_keys(body, lenient)
        purpose = body.get("purpose")
        if lenient and isinstance(purpose, str):
            purpose = purpose.replace("\x00", "\ufffd")  # still decided and recorded
        return cls(
            stream=body.get("stream") is True,
            store=store_flag,
            max_tokens=max(limits) if limits else None,
            n=max(choices) if choices else None,
            previous_response_id=_present(body, "previous_response_id"),
            conversation=_present(body, "conversation"),
            metadata_keys=keys,
            purpose=purpose if isinstance(purpose, str) else None,
            stored_references=_stored_reference(body),
        )

    def to_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["metadata_keys"] = list(self.metadata_keys)
        return doc


def _normalize_path(path: str) -> str:
    """Drop trailing slashes, which routing ignores. The path is the decoded request path,
    without its query: a ``?`` or ``#`` in it is the client's own (``%3F``), part of the path,
    and cutting there would decide ``/v1/models%3F/../fine_tuning/jobs`` as ``/v1/models``."""
    return path.rstrip("/") or "/"


_REQUEST_FIELDS = tuple(f.name for f in fields(RequestParams))


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """Everything the policy decides on, for one request. ``to_dict()`` is the Rego ``input``."""

    channel: Channel
    """``sealed`` (OHTTP, RFC 9458) or ``plaintext``."""
    tenant_id: str
    """Pseudonymous tenant id, as recorded in audit records."""
    tenant_name: str
    """Tenant name; selects the contract in the bundle data (``default`` when absent)."""
    method: str
    """HTTP method of the inner request."""
    path: str
    """Path of the inner request; the query string and trailing slashes are dropped."""
    model: str | None
    """Model named by the request; ``None`` for endpoints without one."""
    request: RequestParams
    """Policy-relevant request parameters."""
    backend_name: str
    """Configured backend the request would go to (``""`` when none)."""
    retention_tier: str
    """``attested-zero``, ``contractual-zero`` or ``none`` (``inference.RetentionTier``)."""
    enclave_platform: str
    """``sev-snp``, ``tdx`` or ``simulated``."""
    enclave_measurement: str
    """Launch measurement of the enclave, hex."""
    enclave_simulated: bool
    """Evidence comes from the simulated provider."""
    enclave_debug: bool
    """The guest runs with debugging enabled."""
    mode: Mode
    """Deployment mode: ``production`` or ``development``."""
    region: str
    """Region the gateway is deployed in (data residency)."""
    allow_plaintext: bool = False
    """Development flag: admit plaintext requests outside production."""
    time: str = field(default_factory=utc_now)
    """Decision time, UTC, ``YYYY-MM-DDTHH:MM:SSZ``."""

    def __post_init__(self) -> None:
        _check(self.channel in ("sealed", "plaintext"), "channel must be sealed or plaintext")
        _check(self.mode in ("production", "development"), "mode must be production or development")
        for name in (
            "tenant_id",
            "tenant_name",
            "method",
            "path",
            "backend_name",
            "retention_tier",
            "enclave_platform",
            "enclave_measurement",
            "region",
        ):
            value = getattr(self, name)
            _check(isinstance(value, str) and "\x00" not in value,
                   f"{name} must be a string without NUL characters")
        _check(self.path.startswith("/"), "path must start with /")
        object.__setattr__(self, "path", _normalize_path(self.path))
        object.__setattr__(self, "method", self.method.upper())
        _check(self.model is None or (isinstance(self.model, str) and "\x00" not in self.model),
               "model must be a string without NUL characters")
        _check(isinstance(self.request, RequestParams), "request must be RequestParams")
        for name in ("enclave_simulated", "enclave_debug", "allow_plaintext"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be a boolean")
        _check(
            isinstance(self.time, str) and bool(_TIME_RE.fullmatch(self.time)) and is_instant(self.time),
            "time must be UTC RFC 3339 YYYY-MM-DDTHH:MM:SSZ",
        )

    def to_dict(self) -> dict[str, Any]:
        """The input document (``policy/schema/input.schema.json``)."""
        return {
            "channel": self.channel,
            "tenant": {"id": self.tenant_id, "name": self.tenant_name},
            "endpoint": {"method": self.method, "path": self.path},
            "model": self.model,
            "request": self.request.to_dict(),
            "backend": {"name": self.backend_name, "retention_tier": self.retention_tier},
            "enclave": {
                "platform": self.enclave_platform,
                "measurement": self.enclave_measurement,
                "simulated": self.enclave_simulated,
                "debug": self.enclave_debug,
            },
            "time": self.time,
            "deployment": {"mode": self.mode, "region": self.region},
            "dev": {"allow_plaintext": self.allow_plaintext},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PolicyInput:
        """Parse and validate an input document (the inverse of ``to_dict``). Every field of
        the schema is required: a missing one is an error, never a permissive default."""
        if not isinstance(doc, Mapping):
            raise PolicyInputError("the input document must be a JSON object")
        try:
            req = {name: doc["request"][name] for name in _REQUEST_FIELDS}
            _check(set(doc["request"]) == set(_REQUEST_FIELDS), "request has an unknown field")
            _check(isinstance(req["metadata_keys"], list), "metadata_keys must be a list")
            req["metadata_keys"] = tuple(req["metadata_keys"])
            enclave, deployment = doc["enclave"], doc["deployment"]
            return cls(
                channel=doc["channel"],
                tenant_id=doc["tenant"]["id"],
                tenant_name=doc["tenant"]["name"],
                method=doc["endpoint"]["method"],
                path=doc["endpoint"]["path"],
                model=doc["model"],
                request=RequestParams(**req),
                backend_name=doc["backend"]["name"],
                retention_tier=doc["backend"]["retention_tier"],
                enclave_platform=enclave["platform"],
                enclave_measurement=enclave["measurement"],
                enclave_simulated=enclave["simulated"],
                enclave_debug=enclave["debug"],
                mode=deployment["mode"],
                region=deployment["region"],
                allow_plaintext=doc["dev"]["allow_plaintext"],
                time=doc["time"],
            )
        except KeyError as exc:
            raise PolicyInputError(f"input document is missing the field {exc.args[0]!r}") from exc
        except (TypeError, AttributeError) as exc:
            raise PolicyInputError("input document has a field of the wrong type (an object "
                                   "where docs/policy.md has one, or the reverse)") from exc
