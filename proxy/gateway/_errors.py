"""The one error root of the gateway, and its single mapping to an HTTP answer."""

from __future__ import annotations

import msgspec

from proxy.ohttp import OHTTPError

__all__ = ["GatewayError", "error_body"]


class GatewayError(Exception):
    """A sealed request was rejected after it was opened.

    ``code`` is ``stale_request`` (Date outside the window), ``replayed_request`` (its
    encapsulation was already seen), ``replay_guard_full``, ``expectation_failed`` (an
    ``Expect`` field) or ``bad_inner_request``;
    ``str(err)`` is ``"CODE: detail"``.
    """

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status


def error_body(err: GatewayError | OHTTPError) -> bytes:
    """The OpenAI-style error envelope with a string code; the detail never holds content."""
    error = {
        "message": err.detail,
        "type": "invalid_request_error",
        "param": None,
        "code": err.code,
    }
    return msgspec.json.encode({"error": error})
