"""The insecure development platform: an Ed25519 key in the process signs a JSON report.

It proves nothing about the machine (anyone can make one); documents say ``"insecure": true``
and verifiers refuse them unless ``allow_simulated`` is set.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ._errors import VerificationError, translate, translated
from ._evidence import Evidence, EvidenceProvider
from ._verdict import EvidenceVerdict, Trace

__all__ = ["SimulatedProvider", "verify_simulated"]


class SimulatedProvider(EvidenceProvider):
    """Signs ``{"report_data", "measurement", "insecure": true, ...}`` with a local key."""

    platform = "simulated"
    name = "simulated"

    def __init__(self, measurement: str, key: Ed25519PrivateKey | None = None) -> None:
        self._measurement = measurement
        self._key = key or Ed25519PrivateKey.generate()

    async def evidence(self, report_data: bytes) -> Evidence:
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        body: dict[str, Any] = {
            "platform": "simulated", "insecure": True, "report_data": report_data.hex(),
            "measurement": self._measurement,
            "public_key": base64.b64encode(public).decode("ascii"),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        signature = self._key.sign(rfc8785.dumps(body))
        encoded = base64.b64encode(signature).decode("ascii")
        report: dict[str, Any] = {"body": body, "signature": encoded}
        return Evidence(platform="simulated", report=rfc8785.dumps(report), provider=self.name)


@translated("report_malformed", "simulated report")
def verify_simulated(report: bytes, *, trace: Trace | None = None) -> EvidenceVerdict:
    """Check the simulated report's self-signature (integrity only, no trust)."""
    trace = [] if trace is None else trace
    with translate("report_malformed", "simulated report"):
        doc = json.loads(report)
        body, signature = doc["body"], base64.b64decode(doc["signature"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["public_key"]))
        report_data = bytes.fromhex(body["report_data"])
        measurement = str(body["measurement"])
        if body.get("insecure") is not True or len(report_data) != 64:
            raise VerificationError("report_malformed", "simulated report lacks its markers")
    try:
        key.verify(signature, rfc8785.dumps(body))
    except InvalidSignature as exc:
        raise VerificationError("report_signature_invalid", "simulated report signature") from exc
    trace.append("simulated report self-signature (INSECURE: no hardware root of trust)")
    return EvidenceVerdict(
        platform="simulated", report_data=report_data, measurement=measurement, debug=False,
        simulated=True, claims={"insecure": True}, checks=tuple(trace),
    )
