"""NVIDIA Hopper GPU evidence: SPDM 1.1 GET_MEASUREMENTS request ‖ MEASUREMENTS response.

DMTF DSP0274 v1.1 §10.11: request = version, 0xE0, param1, param2, nonce[32], slot id;
response = version, 0x60, param1, param2, block count, record length (u24), measurement
record, nonce[32], opaque length (u16), opaque data, signature. The ECDSA-P384 signature
(r‖s, 96 bytes) covers SHA-384 of request ‖ response-without-signature (§15, SPDM 1.1 L1/L2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._errors import VerificationError, translated
from ._verdict import EvidenceVerdict, Trace
from ._x509 import build_chain, load_certificates, pinned_root, resolve_time, verify_chain

__all__ = ["SpdmMeasurements", "gpu_nonce", "parse_spdm", "verify_nvidia"]

REQUEST_SIZE = 37
SIGNATURE_SIZE = 96
# NVIDIA opaque data TLV types (nvtrust local_gpu_verifier OpaqueDataParser).
_OPAQUE_NAMES = {3: "driver_version", 6: "vbios_version", 15: "chip_sku", 17: "project",
                 18: "project_sku"}


def gpu_nonce(report_data: bytes) -> bytes:
    """The SPDM request nonce that binds GPU evidence to CPU evidence: SHA-256(REPORT_DATA)."""
    return hashlib.sha256(report_data).digest()


@dataclass(frozen=True)
class SpdmMeasurements:
    raw: bytes
    request_nonce: bytes
    responder_nonce: bytes
    measurements: dict[int, bytes]
    opaque: dict[int, bytes]
    signature: bytes


def _malformed(detail: str) -> VerificationError:
    return VerificationError("report_malformed", f"SPDM measurements: {detail}")


def _blocks(record: bytes, count: int) -> dict[int, bytes]:
    out, pos = {}, 0
    for _ in range(count):
        if pos + 7 > len(record):
            raise _malformed("measurement record is truncated")
        index, size = record[pos], int.from_bytes(record[pos + 2 : pos + 4], "little")
        value_size = int.from_bytes(record[pos + 5 : pos + 7], "little")
        if value_size + 3 != size or pos + 4 + size > len(record):
            raise _malformed("bad measurement block size")
        out[index] = record[pos + 7 : pos + 4 + size]
        pos += 4 + size
    if pos != len(record):
        raise _malformed("trailing bytes in the measurement record")
    return out


def _tlvs(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos + 4 <= len(data):
        kind, size = int.from_bytes(data[pos : pos + 2], "little"), int.from_bytes(
            data[pos + 2 : pos + 4], "little")
        out[kind] = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    if pos != len(data):
        raise _malformed("bad opaque data")
    return out


def parse_spdm(raw: bytes) -> SpdmMeasurements:
    """Split request ‖ response into nonces, measurement blocks, opaque TLVs and signature."""
    if len(raw) < REQUEST_SIZE + 8 + 32 + 2 + SIGNATURE_SIZE or raw[1] != 0xE0:
        raise _malformed("not a GET_MEASUREMENTS request/response")
    resp = raw[REQUEST_SIZE:]
    if resp[1] != 0x60 or resp[0] != raw[0]:
        raise _malformed("not a MEASUREMENTS response")
    length = int.from_bytes(resp[5:8], "little")
    pos = 8 + length
    if pos + 34 + SIGNATURE_SIZE > len(resp):
        raise _malformed("truncated")
    opaque_len = int.from_bytes(resp[pos + 32 : pos + 34], "little")
    if pos + 34 + opaque_len + SIGNATURE_SIZE != len(resp):
        raise _malformed("length fields disagree with the size")
    return SpdmMeasurements(
        raw=raw, request_nonce=raw[4:36], responder_nonce=resp[pos : pos + 32],
        measurements=_blocks(resp[8 : 8 + length], resp[4]),
        opaque=_tlvs(resp[pos + 34 : pos + 34 + opaque_len]), signature=raw[-SIGNATURE_SIZE:],
    )


def _text(value: bytes) -> str:
    return value.split(b"\x00", 1)[0].decode("ascii", "replace")


def opaque_claims(opaque: dict[int, bytes]) -> dict[str, str]:
    claims = {name: _text(opaque[t]) for t, name in _OPAQUE_NAMES.items() if t in opaque}
    vbios = opaque.get(6)
    if vbios is not None and len(vbios) >= 5:
        claims["vbios_version"] = ".".join(f"{b:02X}" for b in (*vbios[3::-1], vbios[4]))
    return claims


def _signed_by_key(parsed: SpdmMeasurements, cert: x509.Certificate) -> bool:
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):  # the host supplies the chain: skip the unusable
        return False
    sig = parsed.signature
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    der = encode_dss_signature(int.from_bytes(sig[:48]), int.from_bytes(sig[48:]))
    try:
        key.verify(der, parsed.raw[:-SIGNATURE_SIZE], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


@translated("report_malformed", "NVIDIA GPU evidence")
def verify_nvidia(
    report: bytes,
    certificates: bytes,
    *,
    expected_nonce: bytes | None = None,
    at: datetime | None = None,
    trace: Trace | None = None,
) -> EvidenceVerdict:
    """Verify a Hopper SPDM measurement report against its chain and the pinned NVIDIA root."""
    trace = [] if trace is None else trace
    parsed = parse_spdm(report)
    trace.append(f"SPDM GET_MEASUREMENTS ({len(parsed.measurements)} blocks) parsed")
    pool = load_certificates(certificates, "GPU certificate chain")
    leaf = next((c for c in pool if _signed_by_key(parsed, c)), None)
    if leaf is None:
        raise VerificationError("report_signature_invalid", "GPU report signature does not verify")
    chain = build_chain(leaf, pool)
    trace.append("measurement signature (ECDSA P-384) by the GPU attestation key")
    verify_chain(chain, [pinned_root("nvidia_device_identity_ca")], resolve_time(at), "GPU chain")
    trace.append("certificate chain to the pinned NVIDIA Device Identity CA")
    if expected_nonce is not None and parsed.request_nonce != expected_nonce:
        raise VerificationError("gpu_nonce_mismatch", "GPU nonce is not bound to the CPU report")
    claims: dict[str, object] = dict(opaque_claims(parsed.opaque))
    claims["measurements"] = {i: v.hex() for i, v in sorted(parsed.measurements.items())}
    return EvidenceVerdict(
        platform="nvidia", report_data=parsed.request_nonce, measurement="", debug=False,
        claims=claims, checks=tuple(trace),
    )
