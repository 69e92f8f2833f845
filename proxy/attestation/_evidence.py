"""Evidence (platform blobs as collected) and the `EvidenceProvider` interface."""

from __future__ import annotations

import base64
import binascii
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from ._errors import VerificationError

__all__ = ["PLATFORMS", "Evidence", "EvidenceProvider", "text_field"]

PLATFORMS = frozenset({"sev-snp", "tdx", "nvidia", "simulated"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError("document_malformed", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:  # non-ASCII text is a ValueError
        raise VerificationError("document_malformed", f"{what} is not base64") from exc


def text_field(value: object, what: str) -> str:
    """A JSON string that RFC 8785 can encode (JSON may escape a lone surrogate; UTF-8 cannot
    hold one), so the digests and REPORT_DATA computed over it exist."""
    if not isinstance(value, str):
        raise VerificationError("document_malformed", f"{what} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VerificationError("document_malformed", f"{what} is not valid text") from exc
    return value


@dataclass(frozen=True)
class Evidence:
    """One platform's evidence: the signed report plus what is needed to check its signer."""

    platform: str
    """``sev-snp``, ``tdx``, ``nvidia`` or ``simulated``."""
    report: bytes
    """SNP ATTESTATION_REPORT, TDX quote, SPDM request‖response, or simulated JSON report."""
    certificates: bytes = b""
    """PEM certificates: SNP VCEK/VLEK (+ ASK/ARK) from the host, or the GPU chain."""
    provider: str = ""
    """Name of the provider that collected it (``configfs-tsm``, ``sev-guest``, ...)."""
    gpus: tuple[Evidence, ...] = ()
    """GPU evidence bound to this CPU evidence through the SPDM nonce."""

    def to_json(self) -> dict[str, Any]:
        """The JSON form used in identity documents (bytes as standard base64)."""
        out: dict[str, Any] = {"platform": self.platform, "provider": self.provider,
                               "report": _b64(self.report)}
        if self.certificates:
            out["certificates"] = self.certificates.decode("ascii")
        if self.gpus:
            out["gpus"] = [gpu.to_json() for gpu in self.gpus]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evidence:
        """Inverse of `to_json`; ``document_malformed`` on a bad shape."""
        platform = data.get("platform") if isinstance(data, Mapping) else None
        if not isinstance(platform, str) or platform not in PLATFORMS:
            raise VerificationError("document_malformed", "evidence has no known platform")
        certs = data.get("certificates", "")
        gpus = data.get("gpus", [])
        if not isinstance(certs, str) or not isinstance(gpus, list):
            raise VerificationError("document_malformed", "evidence fields have wrong types")
        return cls(
            platform=platform, report=_unb64(data.get("report"), "evidence report"),
            certificates=certs.encode("ascii", "replace"),
            provider=text_field(str(data.get("provider", "")), "evidence provider"),
            gpus=tuple(cls.from_json(g) for g in gpus),
        )

    def digest(self) -> str:
        """``sha256:<hex>`` over the RFC 8785 encoding of `to_json`."""
        return "sha256:" + hashlib.sha256(rfc8785.dumps(self.to_json())).hexdigest()


class EvidenceProvider(ABC):
    """Collects evidence whose REPORT_DATA (or nonce) is the given 64 bytes."""

    platform: str
    """The platform of the evidence this provider returns."""
    name: str
    """Provider name, recorded in the evidence."""

    @abstractmethod
    async def evidence(self, report_data: bytes) -> Evidence:
        """Return fresh evidence over ``report_data`` (64 bytes)."""
