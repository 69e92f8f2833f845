"""The marker a sealed inner request carries in its ASGI scope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCOPE_EXTENSION", "SealedChannel", "sealed_channel"]

SCOPE_EXTENSION = "sealgate"


@dataclass(frozen=True, slots=True)
class SealedChannel:
    """Facts about the sealed exchange that carried this request.

    Only the gateway builds inner scopes, from scratch, and only it sets this marker: an ASGI
    server never puts a :class:`SealedChannel` object in ``scope["extensions"]`` (the server
    owns that mapping and fills it with plain data), so an outer request cannot claim it.
    """

    commitment_key: bytes = field(repr=False)
    """Key for HMAC-SHA256 commitments, exported from this exchange's HPKE context."""
    enc_digest: str
    """Hex SHA-256 of the encapsulated key: a stable, public per-request identifier."""
    chunked: bool
    """Whether the exchange is chunked OHTTP (a streamed response)."""
    key_id: int
    """The gateway key the request was sealed to."""


def sealed_channel(scope: Mapping[str, Any]) -> SealedChannel | None:
    """The :class:`SealedChannel` of a request that came through the gateway, else ``None``."""
    extensions = scope.get("extensions") or {}
    marker = extensions.get(SCOPE_EXTENSION) if isinstance(extensions, Mapping) else None
    return marker if isinstance(marker, SealedChannel) else None
