"""Errors of the inference package: one root, stable string codes, an HTTP status each."""

from __future__ import annotations

__all__ = [
    "BackendBusy", "BackendDisconnected", "BackendError", "BackendRejected", "BackendTimedOut",
    "BackendUnavailable",
    "ContextLengthExceeded", "ModelNotFound",
]


class BackendError(Exception):
    """Root of every inference error. ``str(err)`` is ``"CODE: detail"``."""

    code = "backend_error"
    status = 502
    type = "api_error"
    param: str | None = None
    spent = True
    """Whether the backend may have generated before this ended the request: an answer that
    could not be read, a timeout. The tenant's token budget is charged the request's estimate
    then, as for a client that left; a backend that refused it or was never reached is not."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class BackendUnavailable(BackendError):
    """The backend cannot be reached, is starting, or failed mid-request."""

    code = "backend_unavailable"
    status = 503
    spent = False
    retry_after = 1
    """Seconds the client is told to wait (``Retry-After``): an upstream's own 503 says."""


class BackendTimedOut(BackendUnavailable):
    """The upstream took longer than its timeout: it may have generated all along."""

    spent = True


class BackendDisconnected(BackendUnavailable):
    """The upstream dropped the connection after the request was sent to it, before its answer
    ended: it may have generated."""

    spent = True


class BackendBusy(BackendError):
    """The upstream is rate-limiting (429): the client is told to wait as long as it said."""

    code = "backend_rate_limited"
    status = 429
    type = "rate_limit_error"
    spent = False

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        """Whole seconds to wait, from the upstream's ``Retry-After``."""


class BackendRejected(BackendError):
    """The upstream refused the request (4xx); its message is not relayed, it may echo content."""

    code = "upstream_rejected"
    status = 400
    type = "invalid_request_error"
    spent = False


class ContextLengthExceeded(BackendRejected):
    """The prompt, with the output the request asks for, does not fit the model's context, as
    the OpenAI API answers it: ``param`` names the prompt's field (``messages``, ``prompt`` or
    ``input``). The detail holds token counts only, never the prompt."""

    code = "context_length_exceeded"

    def __init__(self, detail: str, param: str) -> None:
        super().__init__(detail)
        self.param = param


class ModelNotFound(BackendError):
    """No route is configured for the requested model."""

    code = "model_not_found"
    status = 404
    type = "invalid_request_error"
    param = "model"
    spent = False
