"""The decision document: allow / deny with rule ids, obligations, and the bundle that decided."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ._errors import PolicyError, PolicyUnavailable

__all__ = ["Decision", "Denial"]

_RULE_RE = re.compile(r"SG-[A-Z]+-[0-9]{3}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_SCALARS = (str, int, float, bool, type(None))

# The obligations this gateway knows how to honour (docs/policy.md, "Obligations"). A policy
# that asks for anything else gets no decision: an obligation the gateway would ignore must not
# turn into a silent allow.
KNOWN_OBLIGATIONS = frozenset({"set_params", "plaintext_dev_mode"})


@dataclass(frozen=True, slots=True)
class Denial:
    """One rule that denied: its stable id (``SG-AREA-NNN``) and a message without content."""

    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


def _frozen_obligations(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    params = raw.get("set_params", {})
    if not isinstance(params, Mapping) or not all(
        isinstance(k, str) and isinstance(v, _SCALARS) for k, v in params.items()
    ):
        raise PolicyUnavailable("obligation set_params must map names to scalar values")
    out: dict[str, Any] = {k: v for k, v in raw.items() if k != "set_params"}
    if "plaintext_dev_mode" in out and not isinstance(out["plaintext_dev_mode"], bool):
        raise PolicyUnavailable("obligation plaintext_dev_mode must be a boolean")
    if params:
        out["set_params"] = MappingProxyType(dict(params))
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy decision. ``allow`` is never true while a rule denies."""

    allow: bool
    deny: tuple[Denial, ...]
    obligations: Mapping[str, Any]
    bundle_digest: str

    def __post_init__(self) -> None:
        if self.allow and self.deny:
            raise PolicyError("a decision cannot both allow and deny")
        if not _DIGEST_RE.fullmatch(self.bundle_digest):
            raise PolicyError("bundle digest must be sha256:<64 hex>")

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the rules that denied, sorted."""
        return tuple(d.rule for d in self.deny)

    @property
    def set_params(self) -> Mapping[str, Any]:
        """Request parameters the gateway must set before forwarding."""
        params: Mapping[str, Any] = self.obligations.get("set_params", MappingProxyType({}))
        return params

    @property
    def plaintext_dev_mode(self) -> bool:
        """The request was admitted in plaintext under the development flag."""
        return bool(self.obligations.get("plaintext_dev_mode", False))

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the request body with the ``set_params`` obligation applied."""
        return {**body, **self.set_params}

    def to_dict(self) -> dict[str, Any]:
        """The decision document (``policy/schema/decision.schema.json``)."""
        obligations: dict[str, Any] = dict(self.obligations)
        if "set_params" in obligations:
            obligations["set_params"] = dict(obligations["set_params"])
        return {
            "allow": self.allow,
            "deny": [d.to_dict() for d in self.deny],
            "obligations": obligations,
            "bundle_digest": self.bundle_digest,
        }

    @classmethod
    def from_document(cls, doc: object, bundle_digest: str) -> Decision:
        """Validate an engine's answer; anything unexpected is ``PolicyUnavailable``."""
        if not isinstance(doc, Mapping) or set(doc) != {"allow", "deny", "obligations"}:
            raise PolicyUnavailable("the policy answer is not a decision document")
        allow, deny, obligations = doc["allow"], doc["deny"], doc["obligations"]
        if not isinstance(allow, bool) or not isinstance(deny, list):
            raise PolicyUnavailable("the policy answer has a malformed allow or deny")
        if not isinstance(obligations, Mapping) or not set(obligations) <= KNOWN_OBLIGATIONS:
            raise PolicyUnavailable("the policy asked for an obligation the gateway cannot honour")
        denials = sorted({_denial(d) for d in deny}, key=lambda d: (d.rule, d.message))
        if allow and denials:
            raise PolicyUnavailable("the policy answer both allows and denies")
        return cls(allow, tuple(denials), _frozen_obligations(obligations), bundle_digest)


def _denial(item: object) -> Denial:
    if not isinstance(item, Mapping) or set(item) != {"rule", "message"}:
        raise PolicyUnavailable("a denial is not {rule, message}")
    rule, message = item["rule"], item["message"]
    if not isinstance(rule, str) or not _RULE_RE.fullmatch(rule) or not isinstance(message, str):
        raise PolicyUnavailable("a denial has a malformed rule id or message")
    return Denial(rule, message)
