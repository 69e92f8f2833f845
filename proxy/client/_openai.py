"""The official ``openai`` SDK's clients, sealed, for a gateway at ``base``.

Every HTTP request goes through a sealing transport. The SDK's WebSocket APIs (Realtime, the
Responses API over WebSocket) open their own connections beside ``http_client``: they would carry
the tenant's API key and the prompts unsealed, to whatever answers at the gateway's address (the
ingress, which the threat model does not trust). The gateway serves no WebSocket endpoint, so
these clients point them at :data:`NO_WEBSOCKET`, which refuses on this host before anything is
sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx2

from ._keysource import KeySource
from ._transport import AsyncSealedTransport, SealedTransport

if TYPE_CHECKING:
    import openai

__all__ = ["NO_WEBSOCKET", "async_sealed_openai", "sealed_openai"]

NO_WEBSOCKET = "ws://127.0.0.1:0/"
"""``websocket_base_url`` for a client whose HTTP requests are sealed: port 0 accepts no
connection, so a WebSocket API call fails at once, on this host."""

_SET_HERE = ("base_url", "http_client", "websocket_base_url")


def _options(base: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    taken = sorted(set(_SET_HERE) & set(kwargs))
    if taken:
        raise TypeError(f"a sealed client sets {', '.join(taken)} itself")
    return {"base_url": f"{base.rstrip('/')}/v1", "websocket_base_url": NO_WEBSOCKET, **kwargs}


def _gateway_url(base: str) -> str:
    return f"{base.rstrip('/')}/.well-known/ohttp-gateway"


def sealed_openai(base: str, key_source: KeySource, *, inner: httpx2.BaseTransport | None = None,
                  **kwargs: Any) -> openai.OpenAI:
    """``openai.OpenAI`` for the gateway at ``base`` (``https://gateway.example``): requests are
    sealed to the keys ``key_source`` verifies; ``inner`` carries the sealed requests (an
    outbound proxy goes there); other keyword arguments go to ``openai.OpenAI``."""
    import openai

    transport = SealedTransport(inner, gateway_url=_gateway_url(base), key_source=key_source)
    return openai.OpenAI(http_client=httpx2.Client(transport=transport), **_options(base, kwargs))


def async_sealed_openai(base: str, key_source: KeySource, *,
                        inner: httpx2.AsyncBaseTransport | None = None,
                        **kwargs: Any) -> openai.AsyncOpenAI:
    """The asyncio twin of :func:`sealed_openai`: ``openai.AsyncOpenAI``."""
    import openai

    transport = AsyncSealedTransport(inner, gateway_url=_gateway_url(base), key_source=key_source)
    return openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=transport),
                              **_options(base, kwargs))
