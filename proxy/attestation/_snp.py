"""SEV-SNP verification: report signature, VCEK/VLEK → ASK/ASVK → ARK, chip id and TCB binding.

AMD SEV-SNP ABI spec 56860 §7.3 (report), AMD "VCEK certificate and KDS interface"
spec 57230 §3 (certificate extensions: 1.3.6.1.4.1.3704.1.x).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import _der
from ._errors import VerificationError, translated
from ._snp_report import SnpReport, decode_tcb, parse_snp_report
from ._verdict import EvidenceVerdict, Trace
from ._x509 import build_chain, load_certificates, pinned_root, resolve_time, verify_chain

__all__ = ["ARK_NAMES", "verify_sev_snp"]

ARK_NAMES = {"Milan": "amd_ark_milan", "Genoa": "amd_ark_genoa", "Turin": "amd_ark_turin"}
_AMD = "1.3.6.1.4.1.3704.1."
# KDS spec 57230 Table 8: SPL extensions, named as decode_tcb names them.
_SPL_OIDS = {"bootloader": "3.1", "tee": "3.2", "snp": "3.3", "microcode": "3.8", "fmc": "3.9"}
_LEAF_NAMES = {"vcek": "SEV-VCEK", "vlek": "SEV-VLEK"}


def _extension(cert: x509.Certificate, suffix: str) -> bytes | None:
    oid = x509.ObjectIdentifier(_AMD + suffix)
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _check_signature(report: SnpReport, leaf: x509.Certificate) -> None:
    # ABI spec Table 134: r and s are zero-extended little-endian 72-byte fields.
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    try:
        key = leaf.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:  # the host supplies the certificates
        raise VerificationError("report_signature_invalid", "unusable signing key") from exc
    if report.signature_algo != 1 or not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("report_signature_invalid", "not an ECDSA P-384 signature")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        detail = "report signature does not verify"
        raise VerificationError("report_signature_invalid", detail) from exc


def _signing_cert(report: SnpReport, certs: list[x509.Certificate]) -> x509.Certificate:
    """The VCEK/VLEK (per SIGNER_INFO) among ``certs`` whose key verifies the report."""
    wanted = _LEAF_NAMES.get(report.signing_key)
    if wanted is None:
        raise VerificationError("report_malformed", f"report signing key is {report.signing_key}")
    candidates = [c for c in certs if any(
        a.value == wanted for a in c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))]
    if not candidates:
        raise VerificationError("cert_chain_invalid", f"no {wanted} certificate supplied")
    for cert in candidates[:-1]:
        try:
            _check_signature(report, cert)
            return cert
        except VerificationError:
            continue
    _check_signature(report, candidates[-1])
    return candidates[-1]


def _product(root: x509.Certificate, leaf: x509.Certificate) -> str:
    product = next(p for p, name in ARK_NAMES.items() if pinned_root(name) == root)
    name_ext = _extension(leaf, "2")
    if name_ext is not None and _der.read_string(name_ext).split("-")[0] != product:
        raise VerificationError("cert_chain_invalid", f"signing key is not for {product}")
    return product


def _check_binding(report: SnpReport, leaf: x509.Certificate, tcb: dict[str, int]) -> None:
    hwid = _extension(leaf, "4")
    if hwid is not None and not report.mask_chip_id:
        chip = report.chip_id
        if chip[: len(hwid)] != hwid or any(chip[len(hwid) :]):
            raise VerificationError("chip_id_mismatch", "CHIP_ID differs from the VCEK hwID")
    for name, value in tcb.items():
        encoded = _extension(leaf, _SPL_OIDS[name])
        if encoded is None or _der.read_integer(encoded) != value:
            raise VerificationError("tcb_mismatch", f"REPORTED_TCB {name} differs from the cert")


@translated("report_malformed", "SEV-SNP evidence")
def verify_sev_snp(
    report: bytes,
    certificates: bytes,
    *,
    at: datetime | None = None,
    trace: Trace | None = None,
) -> EvidenceVerdict:
    """Verify a SEV-SNP report against a PEM/DER bundle holding the VCEK or VLEK and ASK/ARK."""
    trace = [] if trace is None else trace
    parsed = parse_snp_report(report)
    trace.append(f"SEV-SNP report v{parsed.version} parsed")
    pool = load_certificates(certificates, "SEV-SNP certificates")
    chain = build_chain(_signing_cert(parsed, pool), pool)
    trace.append(f"report signature (ECDSA P-384) by the {parsed.signing_key.upper()}")
    roots = [pinned_root(name) for name in ARK_NAMES.values()]
    root = verify_chain(chain, roots, resolve_time(at), "SEV-SNP chain")
    product = _product(root, chain[0])
    trace.append(f"certificate chain to the pinned AMD ARK-{product}")
    tcb = decode_tcb(parsed.reported_tcb, product)
    _check_binding(parsed, chain[0], tcb)
    trace.append("chip id and REPORTED_TCB match the signing certificate")
    # A guest launched under older firmware keeps what that firmware let in, whatever it
    # runs under now: ``min_tcb`` judges the lowest of the reported, launch and committed
    # TCB, component by component.
    launch = decode_tcb(parsed.launch_tcb, product)
    committed = decode_tcb(parsed.committed_tcb, product)
    judged = {k: min(v, launch[k], committed[k]) for k, v in tcb.items()}
    claims = _claims(parsed, product) | {
        "reported_tcb": tcb, "launch_tcb": launch, "committed_tcb": committed}
    return EvidenceVerdict(
        platform="sev-snp", report_data=parsed.report_data,
        measurement=parsed.measurement.hex(), debug=parsed.debug,
        migration_agent=parsed.migrate_ma, tcb=judged, claims=claims,
        checks=tuple(trace),
    )


def _claims(report: SnpReport, product: str) -> dict[str, object]:
    return {
        "product": product, "version": report.version, "guest_svn": report.guest_svn,
        "policy": hex(report.policy), "vmpl": report.vmpl, "signing_key": report.signing_key,
        "chip_id": report.chip_id.hex(), "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(), "report_id": report.report_id.hex(),
        "current_version": report.current_version, "platform_info": hex(report.platform_info),
    }
