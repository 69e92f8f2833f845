"""Errors of the users package: one root, stable string codes."""

from __future__ import annotations

__all__ = ["InvalidCredentials", "UserError"]


class UserError(Exception):
    """Root of every reviewer-account error. ``str(err)`` is ``"CODE: detail"``."""

    code = "user_error"
    status = 400
    type = "invalid_request_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class InvalidCredentials(UserError):
    """Unknown user or wrong password (the two are indistinguishable)."""

    code = "invalid_credentials"
    status = 401
    type = "authentication_error"
