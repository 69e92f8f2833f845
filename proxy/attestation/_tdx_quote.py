"""Intel TDX DCAP quote v4/v5 layout (Intel TDX DCAP Quoting Library API, Appendix A).

header (48) ‖ [v5: body type u16 ‖ body size u32] ‖ TD report body ‖ signature data length u32 ‖
signature data: ECDSA-P256 quote signature (64, r‖s big-endian) ‖ attestation key (64, x‖y) ‖
certification data (type 6: QE report ‖ QE report signature ‖ QE auth data ‖ type 5 PCK chain).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._errors import VerificationError

__all__ = ["QeReport", "TdReport", "TdxQuote", "parse_tdx_quote"]

HEADER_SIZE = 48
TD10_BODY = 584  # TD report v1.0 (quote v4, v5 body type 2)
TD15_BODY = 648  # TD report v1.5 (v5 body type 3): adds TEE_TCB_SVN_2 and MRSERVICETD
QE_REPORT_SIZE = 384
TEE_TYPE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5


def _malformed(detail: str) -> VerificationError:
    return VerificationError("quote_malformed", detail)


@dataclass(frozen=True)
class TdReport:
    """TD report body fields (TDX module ABI, TDREPORT / TD quote body)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn_2: bytes | None
    mr_service_td: bytes | None

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & 1)  # TDATTRIBUTES bit 0: DEBUG

    @property
    def migratable(self) -> bool:
        """TDATTRIBUTES bit 29, MIGRATABLE: a Migration TD the host binds may export the TD's
        memory (the counterpart of SEV-SNP's MIGRATE_MA)."""
        return bool(self.td_attributes[3] & 0x20)


@dataclass(frozen=True)
class QeReport:
    """SGX REPORT body of the quoting enclave (SGX SDM, REPORTBODY)."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    """A parsed quote; ``signed`` is the byte range the attestation key signed."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int
    body: TdReport
    signed: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


def _td_report(b: bytes) -> TdReport:
    # TDX module ABI, TD quote body: offsets of the 1.0 body, then the 1.5 additions.
    wide = len(b) == TD15_BODY
    return TdReport(
        tee_tcb_svn=b[0:16], mr_seam=b[16:64], mr_signer_seam=b[64:112],
        seam_attributes=b[112:120], td_attributes=b[120:128], xfam=b[128:136],
        mr_td=b[136:184], mr_config_id=b[184:232], mr_owner=b[232:280],
        mr_owner_config=b[280:328], rtmrs=(b[328:376], b[376:424], b[424:472], b[472:520]),
        report_data=b[520:584], tee_tcb_svn_2=b[584:600] if wide else None,
        mr_service_td=b[600:648] if wide else None,
    )


def _qe_report(raw: bytes) -> QeReport:
    (misc,) = struct.unpack_from("<I", raw, 16)
    prod, svn = struct.unpack_from("<HH", raw, 256)
    return QeReport(raw, raw[0:16], misc, raw[48:64], raw[64:96], raw[128:160], prod, svn,
                    raw[320:384])


def _take(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if size < 0 or pos + size > len(data):
        raise _malformed("quote is truncated")
    return data[pos : pos + size], pos + size


def _locate_body(raw: bytes, version: int) -> tuple[int, int, int]:
    """Return (body_type, body_start, body_end)."""
    if version == 4:
        return 2, HEADER_SIZE, HEADER_SIZE + TD10_BODY
    if len(raw) < HEADER_SIZE + 6:
        raise _malformed("quote is truncated")
    body_type, size = struct.unpack_from("<HI", raw, HEADER_SIZE)
    expected = {2: TD10_BODY, 3: TD15_BODY}.get(body_type)
    if expected is None or size != expected:
        raise _malformed(f"unsupported v5 body type {body_type} ({size} bytes)")
    return body_type, HEADER_SIZE + 6, HEADER_SIZE + 6 + size


def _cert_data(data: bytes, pos: int, expected_type: int) -> tuple[bytes, int]:
    header, pos = _take(data, pos, 6)
    cert_type, size = struct.unpack("<HI", header)
    if cert_type != expected_type:
        raise _malformed(f"certification data type {cert_type}, expected {expected_type}")
    return _take(data, pos, size)


def parse_tdx_quote(raw: bytes) -> TdxQuote:
    """Parse a TDX quote v4 or v5 (ECDSA-P256 attestation key, QE report cert data)."""
    if len(raw) < HEADER_SIZE:
        raise _malformed("quote is truncated")
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw, 0)
    if version not in (4, 5) or key_type != ATT_KEY_ECDSA_P256 or tee_type != TEE_TYPE_TDX:
        raise _malformed(f"unsupported quote (version {version}, tee {tee_type:#x})")
    body_type, start, end = _locate_body(raw, version)
    body_bytes, pos = _take(raw, start, end - start)
    size_bytes, pos = _take(raw, pos, 4)
    sig_data, _ = _take(raw, pos, int.from_bytes(size_bytes, "little"))
    signature, key = sig_data[:64], sig_data[64:128]
    qe_data, _ = _cert_data(sig_data, 128, CERT_TYPE_QE_REPORT)
    qe_raw, qpos = _take(qe_data, 0, QE_REPORT_SIZE)
    qe_sig, qpos = _take(qe_data, qpos, 64)
    auth_len, qpos = _take(qe_data, qpos, 2)
    auth, qpos = _take(qe_data, qpos, int.from_bytes(auth_len, "little"))
    pck_pem, _ = _cert_data(qe_data, qpos, CERT_TYPE_PCK_CHAIN)
    return TdxQuote(
        version=version, att_key_type=key_type, tee_type=tee_type, qe_svn=qe_svn,
        pce_svn=pce_svn, qe_vendor_id=raw[12:28], user_data=raw[28:48], body_type=body_type,
        body=_td_report(body_bytes), signed=raw[:end], signature=signature,
        attestation_key=key, qe_report=_qe_report(qe_raw), qe_report_signature=qe_sig,
        qe_auth_data=auth, pck_chain_pem=pck_pem.rstrip(b"\x00"),
    )
