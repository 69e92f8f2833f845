"""Client SDK: seal OpenAI requests to a verified Sealgate enclave (RFC 9458, chunked OHTTP).

client = sealed_openai(base_url, AttestedKeySource(base_url, policy), api_key=...)

is ``OpenAI(base_url=".../v1", api_key=..., http_client=httpx2.Client(transport=transport),
websocket_base_url=NO_WEBSOCKET)`` with ``transport = SealedTransport(gateway_url=
".../.well-known/ohttp-gateway", key_source=...)``: the SDK's WebSocket APIs open connections of
their own, which nothing seals, so they are pointed where nothing answers.

An outbound proxy belongs to the inner transport (``SealedTransport(httpx2.HTTPTransport(proxy=
URL), ...)``): ``proxy=`` or ``mounts=`` on the ``httpx2.Client`` routes around the sealing.
"""

from __future__ import annotations

from ._core import SealedExchange
from ._errors import SealedTransportError
from ._forwarder import ClientProxy, serve_client_proxy
from ._keysource import AttestedKeySource, InsecureEnclaveWarning, KeySource, StaticKeySource
from ._openai import NO_WEBSOCKET, async_sealed_openai, sealed_openai
from ._receipts import VerifiedReceipt, verify_request_records, verify_response_receipt
from ._transport import AsyncSealedTransport, SealedTransport

__all__ = [
    "NO_WEBSOCKET",
    "AsyncSealedTransport",
    "AttestedKeySource",
    "ClientProxy",
    "InsecureEnclaveWarning",
    "KeySource",
    "SealedExchange",
    "SealedTransport",
    "SealedTransportError",
    "StaticKeySource",
    "VerifiedReceipt",
    "async_sealed_openai",
    "sealed_openai",
    "serve_client_proxy",
    "verify_request_records",
    "verify_response_receipt",
]
