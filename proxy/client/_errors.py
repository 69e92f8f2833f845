"""The one error root of the client SDK."""

from __future__ import annotations

__all__ = ["SealedTransportError"]


class SealedTransportError(Exception):
    """A sealed request could not be sent or its answer could not be opened.

    ``code`` is ``enclave_unverified`` (no verified key: nothing was sent),
    ``gateway_rejected`` (the gateway refused the encapsulated request),
    ``response_invalid`` (the sealed answer failed to open or decode) or ``request_invalid``
    (a header field Binary HTTP cannot carry: nothing was sent).
    ``str(err)`` is ``"CODE: detail"``.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
