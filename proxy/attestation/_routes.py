"""``/.well-known/sealgate/identity``: GET (cached document) and POST (fresh, with a nonce)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import SerializationException

from ._errors import VerificationError
from ._identity import IdentityService

__all__ = ["identity_handlers"]

PATH = "/.well-known/sealgate/identity"
NONCE_MIN, NONCE_MAX = 16, 64


def _error(status: int, message: str, kind: str, code: str, param: str | None = None
           ) -> Response[dict[str, Any]]:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(body, status_code=status, headers={"Cache-Control": "no-store"})


async def _respond(service: IdentityService, nonce: bytes | None) -> Response[dict[str, Any]]:
    try:
        document = await service.document(nonce)
    except VerificationError as exc:
        return _error(503, "enclave evidence is unavailable", "server_error", exc.code)
    return Response(document, headers={"Cache-Control": "no-store"})


@get(PATH)
async def get_identity(identity_service: IdentityService) -> Response[dict[str, Any]]:
    """The current identity document (no nonce; cached until an input changes)."""
    return await _respond(identity_service, None)


def _nonce(payload: Any) -> bytes | None:
    value = payload.get("nonce") if isinstance(payload, dict) else None
    if not isinstance(value, str):
        return None
    try:
        nonce = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # non-ASCII text is a ValueError
        return None
    return nonce if NONCE_MIN <= len(nonce) <= NONCE_MAX else None


def _client_key(host: str) -> str:
    """Whose budget a request spends: its IPv4 address, or its IPv6 /64 (one host is given a
    whole /64, and could otherwise spend a fresh budget from each address)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@post(PATH, status_code=200)
async def post_identity(
    request: Request[Any, Any, Any], identity_service: IdentityService
) -> Response[dict[str, Any]]:
    """A fresh identity document whose REPORT_DATA binds the client's nonce."""
    client = _client_key(request.client.host if request.client else "unknown")
    if not identity_service.nonce_limiter.allow(client):
        return _error(429, "too many identity requests; retry later", "rate_limit_error",
                      "rate_limited")
    try:
        payload = await request.json()
    except (SerializationException, ValueError, RecursionError):  # also bad UTF-8, deep nesting
        payload = None
    nonce = _nonce(payload)
    if nonce is None:
        return _error(400, f"nonce must be base64 of {NONCE_MIN} to {NONCE_MAX} bytes",
                      "invalid_request_error", "invalid_nonce", "nonce")
    return await _respond(identity_service, nonce)


identity_handlers = [get_identity, post_identity]
"""The route handlers; the app provides ``identity_service`` with ``Provide(...)``."""
