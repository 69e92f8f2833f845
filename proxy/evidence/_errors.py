"""Errors of the evidence package: one root, stable string codes."""

from __future__ import annotations

__all__ = ["BundleInvalid", "EvidenceError", "ExportFailed", "kind_of"]


class EvidenceError(Exception):
    """Root of every evidence-bundle error. ``str(err)`` is ``"CODE: detail"``."""

    code = "evidence_error"
    status = 400
    type = "invalid_request_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class ExportFailed(EvidenceError):
    """A bundle cannot be built from the data directory (no log, no checkpoint, bad window)."""

    code = "export_failed"


class BundleInvalid(EvidenceError):
    """A bundle cannot be read at all (not a zip, no manifest)."""

    code = "bundle_invalid"


def kind_of(exc: BaseException) -> str:
    """An exception's type as a verdict names it: bare for builtins, else module-qualified
    (``zlib.error``), so a report says which library refused the input."""
    name = type(exc).__qualname__
    module = type(exc).__module__
    return name if module == "builtins" else f"{module}.{name}"
