"""Errors of the evidence package: one root, stable string codes."""

from __future__ import annotations

__all__ = ["BundleInvalid", "EvidenceError", "ExportFailed"]


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
