"""Errors of the inference package: one root, stable string codes, an HTTP status each."""

from __future__ import annotations

__all__ = ["BackendBusy", "BackendError", "BackendRejected", "BackendUnavailable", "ModelNotFound"]


class BackendError(Exception):
    """Root of every inference error. ``str(err)`` is ``"CODE: detail"``."""

    code = "backend_error"
    status = 502
    type = "api_error"
    param: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class BackendUnavailable(BackendError):
    """The backend cannot be reached, is starting, or failed mid-request."""

    code = "backend_unavailable"
    status = 503


class BackendBusy(BackendError):
    """The upstream is rate-limiting (429): the client is told to wait as long as it said."""

    code = "backend_rate_limited"
    status = 429
    type = "rate_limit_error"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        """Whole seconds to wait, from the upstream's ``Retry-After``."""


class BackendRejected(BackendError):
    """The upstream refused the request (4xx); its message is not relayed, it may echo content."""

    code = "upstream_rejected"
    status = 400
    type = "invalid_request_error"


class ModelNotFound(BackendError):
    """No route is configured for the requested model."""

    code = "model_not_found"
    status = 404
    type = "invalid_request_error"
    param = "model"
