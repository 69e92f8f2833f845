"""TDX collateral evaluation: CRLs, TCB info and QE identity (Intel DCAP QVL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ._collateral import Collateral
from ._errors import VerificationError, translate
from ._tdx_quote import TdxQuote
from ._tdx_tcb import (
    RELAUNCH_ADVISED,
    RELAUNCH_ADVISED_CONFIGURATION,
    combine_status,
    level_status,
    load_signed,
    loads_strict,
    module_status,
    qe_status,
    relaunch_status,
)
from ._verdict import Trace
from ._x509 import check_crl, load_certificates, pinned_root, verify_chain

if TYPE_CHECKING:
    from ._tdx import PckInfo

__all__ = ["TcbEvaluation", "evaluate_collateral"]

_TCB_SIGNER = "Intel SGX TCB Signing"


def _load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    with translate("collateral_invalid", what):
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)


def _require(collateral: Collateral) -> tuple[bytes, bytes, bytes, bytes]:
    missing = [
        name for name, value in (
            ("tcb_infos", collateral.tcb_infos), ("qe_identity", collateral.qe_identity),
            ("tcb_signing_chain", collateral.tcb_signing_chain),
            ("pck_crl", collateral.pck_crl), ("root_crl", collateral.root_crl),
        ) if not value
    ]
    qe, pck_crl, root_crl = collateral.qe_identity, collateral.pck_crl, collateral.root_crl
    if missing or qe is None or pck_crl is None or root_crl is None:
        raise VerificationError("collateral_missing", "missing " + ", ".join(missing))
    return qe, collateral.tcb_signing_chain, pck_crl, root_crl


def _check_crls(chain: Sequence[x509.Certificate], signing: Sequence[x509.Certificate],
                pck_crl: bytes, root_crl: bytes, when: datetime, trace: Trace) -> None:
    """Root CRL over everything the root issued; PCK CRL from exactly the PCK's issuer."""
    root = pinned_root("intel_sgx_root_ca")
    check_crl(_load_crl(root_crl, "root CRL"), root, [*chain[1:], *signing], when, "root")
    issuer = chain[1] if len(chain) > 1 else root
    check_crl(_load_crl(pck_crl, "PCK CRL"), issuer, chain[:1], when, "PCK")
    trace.append("PCK certificate, its CA and the TCB Signing certificate are not revoked "
                 "(PCK CRL, root CRL)")


def _check_signer(cert: x509.Certificate) -> None:
    """The TCB info and QE identity signer is Intel's TCB Signing certificate, as QVL requires:
    another end-entity certificate under the root (the root CRL check already holds it to
    certificates the root issued itself) is not Intel's word on TCB levels."""
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [_TCB_SIGNER]:
        raise VerificationError("collateral_invalid",
                                f"TCB signing chain: the signer is not the {_TCB_SIGNER} certificate")


def _select(infos: Sequence[bytes], fmspc: bytes) -> bytes:
    for data in infos:
        with translate("collateral_invalid", "tcbInfo"):
            if bytes.fromhex(loads_strict(data.decode())["tcbInfo"]["fmspc"]) == fmspc:
                return data
    raise VerificationError("fmspc_mismatch", f"no TCB info for FMSPC {fmspc.hex()}")


@dataclass(frozen=True)
class TcbEvaluation:
    """The TCB statuses of a quote: ``status`` is the one policies judge."""

    status: str
    qe_status: str
    launch_status: str
    """Platform, module and QE under TEE_TCB_SVN: the TDX module the TD was launched under."""
    current_status: str | None
    """The same under TEE_TCB_SVN_2, the module running now (TD 1.5 quotes only)."""


def _platform_status(doc: Mapping[str, Any], pck: PckInfo, quote: TdxQuote, svn: bytes) -> str:
    body = quote.body
    module = module_status(doc, body.mr_signer_seam, body.seam_attributes, svn)
    return combine_status(level_status(doc["tcbLevels"], pck.sgx_svns, pck.pce_svn, svn), module)


def _tcb_info(quote: TdxQuote, pck: PckInfo, infos: Sequence[bytes],
              signer: x509.Certificate, when: datetime) -> tuple[str, str | None]:
    """The platform status (TCB level and TDX module) at launch, and now for a TD 1.5 quote."""
    doc = load_signed(_select(infos, pck.fmspc), "tcbInfo", signer, when).body
    body = quote.body
    with translate("collateral_invalid", "tcbInfo"):
        # The selection above is a shortcut; the decision rests on the signed body.
        if bytes.fromhex(doc["fmspc"]) != pck.fmspc:
            raise VerificationError("fmspc_mismatch", "signed TCB info is for another FMSPC")
        if doc["id"] != "TDX" or bytes.fromhex(doc["pceId"]) != pck.pce_id:
            raise VerificationError("collateral_invalid", "TCB info is not for this TDX PCE")
        launch = _platform_status(doc, pck, quote, body.tee_tcb_svn)
        current = (None if body.tee_tcb_svn_2 is None
                   else _platform_status(doc, pck, quote, body.tee_tcb_svn_2))
    return launch, current


def evaluate_collateral(
    quote: TdxQuote,
    pck: PckInfo,
    chain: Sequence[x509.Certificate],
    collateral: Collateral,
    when: datetime,
    trace: Trace,
) -> TcbEvaluation:
    """The quote's TCB statuses; raise on revocation or mismatch."""
    qe_doc, signing_pem, pck_crl, root_crl = _require(collateral)
    signing = load_certificates(signing_pem, "TCB signing chain")
    verify_chain(signing, [pinned_root("intel_sgx_root_ca")], when, "TCB signing chain")
    _check_signer(signing[0])
    _check_crls(chain, signing, pck_crl, root_crl, when, trace)
    platform, now = _tcb_info(quote, pck, collateral.tcb_infos, signing[0], when)
    trace.append(f"TCB info signed by Intel, FMSPC matches, TCB level status {platform}")
    identity = load_signed(qe_doc, "enclaveIdentity", signing[0], when).body
    qe = quote.qe_report
    qe_level = qe_status(identity, qe.misc_select, qe.attributes, qe.mr_signer,
                         qe.isv_prod_id, qe.isv_svn)
    trace.append(f"QE identity signed by Intel, MRSIGNER/ISVPRODID match, QE status {qe_level}")
    launch = overall = combine_status(platform, qe_level)
    current = None
    if now is not None:
        current = combine_status(now, qe_level)
        overall = relaunch_status(launch, current)
        advised = (", so a relaunch is advised"
                   if overall in (RELAUNCH_ADVISED, RELAUNCH_ADVISED_CONFIGURATION) else "")
        trace.append(f"TD 1.5: status {launch} under the TDX module the TD was launched under "
                     f"(TEE_TCB_SVN), {current} under the one running now (TEE_TCB_SVN_2){advised}")
    if overall == "Revoked":
        raise VerificationError("tcb_revoked", "the platform or QE TCB is revoked")
    return TcbEvaluation(overall, qe_level, launch, current)
