"""Client SDK: seal OpenAI requests to a verified Sealgate enclave (RFC 9458, chunked OHTTP).

transport = SealedTransport(gateway_url=".../.well-known/ohttp-gateway",
                            key_source=AttestedKeySource(base_url, policy))
client = OpenAI(base_url=".../v1", api_key=..., http_client=httpx2.Client(transport=transport))

An outbound proxy belongs to the inner transport (``SealedTransport(httpx2.HTTPTransport(proxy=
URL), ...)``): ``proxy=`` or ``mounts=`` on the ``httpx2.Client`` routes around the sealing.
"""

from __future__ import annotations

from ._core import SealedExchange
from ._errors import SealedTransportError
from ._forwarder import ClientProxy, serve_client_proxy
from ._keysource import AttestedKeySource, KeySource, StaticKeySource
from ._receipts import VerifiedReceipt, verify_request_records, verify_response_receipt
from ._transport import AsyncSealedTransport, SealedTransport

__all__ = [
    "AsyncSealedTransport",
    "AttestedKeySource",
    "ClientProxy",
    "KeySource",
    "SealedExchange",
    "SealedTransport",
    "SealedTransportError",
    "StaticKeySource",
    "VerifiedReceipt",
    "serve_client_proxy",
    "verify_request_records",
    "verify_response_receipt",
]
