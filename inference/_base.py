"""The backend protocol every model server implements, and the routing types."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["Backend", "GenerationKind", "ModelRoute", "RetentionTier"]

GenerationKind = Literal["chat", "completions"]
Json = dict[str, Any]


class RetentionTier(enum.StrEnum):
    """What the operator can prove about the backend keeping content."""

    ATTESTED_ZERO = "attested-zero"
    """Runs inside the attested boundary (same enclave or a confidential GPU); nothing kept."""
    CONTRACTUAL_ZERO = "contractual-zero"
    """Outside the boundary, under a zero-retention contract only."""
    NONE = "none"
    """No retention guarantee at all; policy never allows it."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One public model name and where it is served."""

    name: str
    """Model name clients send (``model`` in the request)."""
    backend: str
    """Name of the configured backend serving it."""
    retention_tier: RetentionTier
    """Retention tier recorded in every decision and audit record."""
    upstream_model: str | None = None
    """Model name the backend expects, when it differs from ``name``."""
    owned_by: str = "sealgate"
    """``owned_by`` shown in ``GET /v1/models``."""


@runtime_checkable
class Backend(Protocol):
    """A model server. Bodies are OpenAI request/response documents (already validated).

    ``cache_scope`` says who may share cached prompt state (a prefix cache's KV entries) with
    a request: requests with equal scopes may, requests with different scopes never, and a
    request without one shares with nobody. A cache hit shows in the answer's timing and in
    ``usage.prompt_tokens_details.cached_tokens``, so a cache shared across tenants would tell
    one tenant what another's prompts begin with. The gateway passes one opaque scope per
    tenant.
    """

    name: str

    async def start(self) -> None:
        """Load or connect; called once at application start-up."""

    async def close(self) -> None:
        """Release the model / connections."""

    async def ready(self) -> bool:
        """True when a request would be served now."""

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any], *,
                       cache_scope: str | None = None) -> Json:
        """A whole (non-streaming) chat or text completion."""

    def stream(self, kind: GenerationKind, body: Mapping[str, Any], *,
               cache_scope: str | None = None) -> AsyncIterator[Json]:
        """Chunks of a streaming completion; closing the iterator cancels generation."""

    async def embed(self, body: Mapping[str, Any], *, cache_scope: str | None = None) -> Json:
        """An embeddings response."""
