"""Errors of the policy package: one root, stable string codes, an HTTP status each."""

from __future__ import annotations

__all__ = ["PolicyBundleError", "PolicyError", "PolicyInputError", "PolicyUnavailable"]


class PolicyError(Exception):
    """Root of every policy error. ``str(err)`` is ``"CODE: detail"``."""

    code = "policy_error"
    status = 500
    type = "server_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class PolicyUnavailable(PolicyError):
    """No trustworthy decision: the engine failed, timed out or answered garbage.

    Fail closed (DESIGN.md, invariant 2): the request is not forwarded; the gateway answers 503.
    """

    code = "policy_unavailable"
    status = 503


class PolicyInputError(PolicyError):
    """The policy input document has a missing field or a value of the wrong type."""

    code = "invalid_policy_input"
    status = 400
    type = "invalid_request_error"


class PolicyBundleError(PolicyError):
    """A policy bundle could not be read, parsed, validated or compiled."""

    code = "invalid_policy_bundle"
