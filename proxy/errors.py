"""The proxy's error root and the one place errors become HTTP responses.

Every failure leaves as an OpenAI error envelope ``{"error": {"message", "type", "param",
"code"}}`` with a *string* code. Errors of the other packages carry ``code`` and ``status``
attributes and are mapped here too; anything else is an internal error with no detail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

__all__ = [
    "AuthenticationError",
    "ClientDisconnected",
    "ConfigError",
    "InvalidJSON",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "PolicyDenied",
    "RequestTooLarge",
    "SealedChannelRequired",
    "SealgateError",
    "error_envelope",
    "error_response",
    "exception_handler",
    "observe_errors",
    "set_error_headers",
]

_log = structlog.get_logger("sealgate.errors")


class SealgateError(Exception):
    """Root of the proxy's errors. ``str(err)`` is ``"CODE: detail"``."""

    code = "sealgate_error"
    status = 400
    type = "invalid_request_error"

    def __init__(self, detail: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class ConfigError(SealgateError):
    code = "invalid_config"


class InvalidJSON(SealgateError):
    code = "invalid_json"


class InvalidRequest(SealgateError):
    code = "invalid_request_error"


class AuthenticationError(SealgateError):
    code = "invalid_api_key"
    status = 401
    type = "authentication_error"


class PermissionDenied(SealgateError):
    code = "permission_denied"
    status = 403
    type = "permission_error"


class SealedChannelRequired(PermissionDenied):
    code = "sealed_channel_required"


class PolicyDenied(PermissionDenied):
    """A policy denial; carries rule ids, never request content."""

    code = "policy_denied"

    def __init__(self, rules: list[str], messages: list[str]) -> None:
        detail = "denied by policy: " + "; ".join(
            f"{rule} ({message})" if message else rule for rule, message in zip(rules, messages, strict=True))
        super().__init__(detail)
        self.rules = rules


class NotFound(SealgateError):
    code = "not_found"
    status = 404


class RequestTooLarge(SealgateError):
    code = "request_too_large"
    status = 413


class ClientDisconnected(SealgateError):
    """The client went away before the answer was ready; nothing reaches it. 499 is nginx's
    "client closed request", used only in records and logs."""

    code = "client_disconnected"
    status = 499


_HEADERS_KEY = "sealgate.error_headers"
_OBSERVER_KEY = "sealgate.error_observer"


def set_error_headers(scope: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Headers an error answer to this request carries too (``x-request-id``, the intent
    receipt), so a client can find the request's records after a failure. Kept in the scope's
    ``state``, which Litestar gives every request."""
    state = scope.get("state")
    if isinstance(state, dict):
        state[_HEADERS_KEY] = headers


def observe_errors(scope: Mapping[str, Any], observer: Callable[[int, str], None]) -> None:
    """``observer(status, code)`` learns the error answer this request gets, if it gets one,
    so that the request log and metrics count failures too. Kept in the scope's ``state``."""
    state = scope.get("state")
    if isinstance(state, dict):
        state[_OBSERVER_KEY] = observer


def error_envelope(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json",
                    headers=headers)


_HTTP_CODES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limited"),
}


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Map any exception to the OpenAI envelope. Messages never include request content."""
    response, code = _mapped(exc)
    state = request.scope.get("state") or {}
    extra = state.get(_HEADERS_KEY)
    if extra:
        response.headers.update(extra)
    observer = state.get(_OBSERVER_KEY)
    if observer is not None:
        observer(response.status_code, code)
    return response


def error_response(exc: Exception) -> Response[bytes]:
    """The envelope answer to ``exc`` outside a request's exception handling."""
    return _mapped(exc)[0]


def _mapped(exc: Exception) -> tuple[Response[bytes], str]:
    """The answer to ``exc`` and its error code."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    if isinstance(code, str) and isinstance(status, int):
        detail = getattr(exc, "detail", None) or str(exc)
        type_ = getattr(exc, "type", None) or ("api_error" if status >= 500 else "invalid_request_error")
        body = error_envelope(str(detail), str(type_), code, getattr(exc, "param", None))
        retry_after = getattr(exc, "retry_after", 1)
        headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
        return _json(status, body, headers), code
    if isinstance(exc, ValidationException):
        return _json(400, error_envelope("the request is invalid", "invalid_request_error",
                                         "invalid_request_error")), "invalid_request_error"
    if isinstance(exc, HTTPException):
        type_, http_code = _HTTP_CODES.get(exc.status_code, ("invalid_request_error", "bad_request"))
        if exc.status_code >= 500:
            type_, http_code = "api_error", "internal_error"
        message = exc.detail if exc.status_code < 500 else "internal error"
        return _json(exc.status_code, error_envelope(str(message), type_, http_code),
                     dict(exc.headers or {})), http_code
    _log.error("unhandled_error", error_type=type(exc).__name__)
    return _json(500, error_envelope("internal error", "api_error", "internal_error")), "internal_error"
