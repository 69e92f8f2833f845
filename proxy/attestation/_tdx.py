"""TDX quote verification (Intel TDX DCAP Quote Verification, QVL ``verifyQuote`` steps).

1. quote signature by the attestation key over header ‖ body;
2. QE report binds the key: QE REPORTDATA[0:32] == SHA-256(attestation key ‖ QE auth data);
3. QE report signed by the PCK leaf; PCK chain to the pinned Intel SGX Root CA;
4. with collateral: CRLs, TCB info (signature, FMSPC, status), QE identity.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import _der
from ._collateral import Collateral
from ._errors import VerificationError, translate, translated
from ._tdx_collateral import TcbEvaluation, evaluate_collateral
from ._tdx_quote import TdxQuote, parse_tdx_quote
from ._verdict import EvidenceVerdict, Trace
from ._x509 import load_certificates, pinned_root, resolve_time, verify_chain

__all__ = ["PckInfo", "verify_tdx"]

_SGX_EXT = "1.2.840.113741.1.13.1"
# Intel's TD quoting enclave, as its QE identity (Intel PCS, tdx/certification/v4/qe/identity)
# names it. Checked with or without collateral: the PCK signs the report of any enclave the
# host may launch with the provisioning key, so only these values say the quote's attestation
# key belongs to Intel's quoting enclave and not to one of the host's making.
_TD_QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
_TD_QE_PRODID = 2
# The quote header's QE vendor id for Intel's quoting enclaves (Intel TDX DCAP Quote Generation
# Library, "QE Vendor ID"); QVL refuses any other.
_INTEL_QE_VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
_SGX_DEBUG = 0x02  # SGX ATTRIBUTES.FLAGS bit 1


class PckInfo:
    """The SGX extension of a PCK certificate (Intel PCK Certificate and CRL spec §1.3.5)."""

    def __init__(self, cert: x509.Certificate) -> None:
        oid = x509.ObjectIdentifier(_SGX_EXT)
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound as exc:
            raise VerificationError("cert_chain_invalid", "PCK has no SGX extension") from exc
        encoded = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        with translate("cert_chain_invalid", "PCK SGX extension"):
            fields = _der.oid_map(_der.read_tlv(encoded)[1])
            tcb = _der.oid_map(fields[f"{_SGX_EXT}.2"][1])
            self.fmspc: bytes = fields[f"{_SGX_EXT}.4"][1]
            self.pce_id: bytes = fields[f"{_SGX_EXT}.3"][1]
            self.sgx_svns = [int.from_bytes(tcb[f"{_SGX_EXT}.2.{i}"][1]) for i in range(1, 17)]
            self.pce_svn = int.from_bytes(tcb[f"{_SGX_EXT}.2.17"][1])


def _ecdsa_p256(key_xy: bytes, signature: bytes, data: bytes, code: str, what: str) -> None:
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + key_xy)
        der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError(code, f"{what} does not verify") from exc


def _point(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("cert_chain_invalid", "PCK key is not ECDSA P-256")
    return key.public_numbers().x.to_bytes(32) + key.public_numbers().y.to_bytes(32)


def _check_quote(quote: TdxQuote, trace: Trace) -> None:
    _ecdsa_p256(quote.attestation_key, quote.signature, quote.signed,
                "quote_signature_invalid", "quote signature")
    trace.append("quote signature (ECDSA P-256) by the attestation key")
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
    data = quote.qe_report.report_data
    if data[:32] != expected or any(data[32:]):
        raise VerificationError("qe_report_invalid", "QE report does not bind the attestation key")
    trace.append("QE report binds the attestation key")


@translated("report_malformed", "TDX evidence")
def verify_tdx(
    quote: bytes,
    collateral: Collateral | None = None,
    *,
    at: datetime | None = None,
    trace: Trace | None = None,
) -> EvidenceVerdict:
    """Verify a TDX quote v4/v5; TCB status is evaluated when collateral is given."""
    trace = [] if trace is None else trace
    when = resolve_time(at)
    parsed = parse_tdx_quote(quote)
    trace.append(f"TDX quote v{parsed.version} (body type {parsed.body_type}) parsed")
    _check_quote(parsed, trace)
    chain = load_certificates(parsed.pck_chain_pem, "PCK chain")
    verify_chain(chain, [pinned_root("intel_sgx_root_ca")], when, "PCK chain")
    trace.append("PCK chain to the pinned Intel SGX Root CA")
    qe = parsed.qe_report
    _ecdsa_p256(_point(chain[0]), parsed.qe_report_signature, qe.raw,
                "qe_report_invalid", "QE report signature")
    trace.append("QE report signature by the PCK certificate")
    if (qe.mr_signer != _TD_QE_MRSIGNER or qe.isv_prod_id != _TD_QE_PRODID
            or qe.attributes[0] & _SGX_DEBUG):
        raise VerificationError("qe_identity_mismatch",
                                "QE report is not from Intel's TD quoting enclave")
    if parsed.qe_vendor_id != _INTEL_QE_VENDOR:
        raise VerificationError("qe_identity_mismatch",
                                "the quote header names another quoting enclave vendor")
    trace.append("QE report from Intel's TD quoting enclave (MRSIGNER, ISVPRODID, not debug; "
                 "Intel's QE vendor id)")
    pck = PckInfo(chain[0])
    tcb = None if collateral is None else evaluate_collateral(parsed, pck, chain, collateral,
                                                               when, trace)
    return _verdict(parsed, pck, tcb, trace)


def _verdict(quote: TdxQuote, pck: PckInfo, evaluation: TcbEvaluation | None,
             trace: Trace) -> EvidenceVerdict:
    body = quote.body
    tcb = {f"tee_tcb_svn_{i:02d}": v for i, v in enumerate(body.tee_tcb_svn)}
    tcb |= {"pce_svn": pck.pce_svn, "qe_svn": quote.qe_report.isv_svn}
    claims = {
        "version": quote.version, "fmspc": pck.fmspc.hex(), "mr_seam": body.mr_seam.hex(),
        "td_attributes": body.td_attributes.hex(), "xfam": body.xfam.hex(),
        "mr_config_id": body.mr_config_id.hex(), "mr_owner": body.mr_owner.hex(),
        "rtmrs": [r.hex() for r in body.rtmrs],
        "qe_tcb_status": evaluation.qe_status if evaluation else None,
    }
    if body.tee_tcb_svn_2 is not None:  # TD 1.5: the TDX module running now, and its status
        claims["tee_tcb_svn_2"] = body.tee_tcb_svn_2.hex()
        claims["mr_service_td"] = body.mr_service_td.hex() if body.mr_service_td else None
        if evaluation is not None:
            claims["launch_tcb_status"] = evaluation.launch_status
            claims["current_tcb_status"] = evaluation.current_status
    return EvidenceVerdict(
        platform="tdx", report_data=body.report_data, measurement=body.mr_td.hex(),
        debug=body.debug, migration_agent=body.migratable, tcb=tcb,
        tcb_status=evaluation.status if evaluation else None,
        claims=claims, checks=tuple(trace),
    )
