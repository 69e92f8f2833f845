"""Shared helpers for the attestation tests: vector access and forged-certificate builders.

`SnpForge` and `TdxForge` re-root real vectors under keys made here (the pinned AMD/Intel root
is swapped for ours with ``monkeypatch``), so a test can sign what an attacker would need
signed while every parsed field stays the real one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from proxy.attestation import Collateral, _snp, _tdx, _tdx_collateral
from proxy.attestation._snp_report import SIGNED_SIZE
from proxy.attestation._tdx_quote import parse_tdx_quote
from proxy.attestation._tdx_tcb import _raw_member
from proxy.attestation._x509 import load_certificates, pinned_root
from tests.conftest import load_vector, vector_path

SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TDX_V4_AT = dt.datetime(2023, 6, 20, tzinfo=dt.UTC)
TDX_V5_AT = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)


def vector_cases(folder: str, key: str, id_key: str) -> list[Any]:
    """One pytest param per manifest entry; a single placeholder when vectors are absent."""
    try:
        data = load_vector(folder, "manifest.json")
    except pytest.skip.Exception:
        return [pytest.param(None, id="vectors-missing")]
    return [pytest.param(case, id=case[id_key]) for case in data[key]]


def need_case(case: Any, folder: str) -> dict[str, Any]:
    """Skip (or fail under SEALGATE_REQUIRE_ALL) for the placeholder case."""
    if case is None:
        load_vector(folder, "manifest.json")
    assert isinstance(case, dict)
    return case


def snp_case(report: str) -> dict[str, Any]:
    cases = load_vector("sev-snp", "manifest.json")["reports"]
    return next(c for c in cases if c["report"] == report)


def snp_report(case: dict[str, Any]) -> bytes:
    return vector_path("sev-snp", case["report"]).read_bytes()


def pem(data: bytes) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM)
                    for c in load_certificates(data, "test"))


def snp_certs(case: dict[str, Any], leaf: str | None = None) -> bytes:
    leaf_bytes = vector_path("sev-snp", leaf or case["signing_cert"]).read_bytes()
    return pem(leaf_bytes) + vector_path("sev-snp", case["cert_chain"]).read_bytes()


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def name(cn: str | x509.Name) -> x509.Name:
    return cn if isinstance(cn, x509.Name) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


Subject = str | x509.Name


def issue(
    subject: Subject,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[Subject, ec.EllipticCurvePrivateKey] | None = None,
    extensions: Sequence[x509.Extension[Any]] | None = None,
    ca: bool | None = True,
    path_length: int | None = None,
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer`` (self-signed when None), valid 2000-2099.

    ``ca=None`` leaves basicConstraints out (as on AMD's VCEKs).
    """
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    for ext in extensions or []:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(issuer_key, hashes.SHA384())


def forged_chain(names: list[str], leaf_key: ec.EllipticCurvePrivateKey,
                 leaf_extensions: list[x509.Extension[Any]] | None = None) -> list[x509.Certificate]:
    """Root-first names → [leaf, ..., self-signed root], all under keys made here."""
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in names[:-1]] + [leaf_key]
    certs = [issue(names[0], keys[0])]
    for i in range(1, len(names)):
        last = i == len(names) - 1
        exts = leaf_extensions if last else None
        certs.append(issue(names[i], keys[i], (names[i - 1], keys[i - 1]), exts, ca=not last))
    return certs[::-1]


def to_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def make_crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: Sequence[int] = (),
             at: dt.datetime = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)) -> bytes:
    """A DER CRL from ``issuer`` listing ``revoked`` serials, valid for a year from ``at``."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(at).next_update(at + dt.timedelta(days=365)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def sign_snp(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Re-sign a SEV-SNP report (ABI spec Table 134: r, s little-endian, 72 bytes each)."""
    out = bytearray(report)
    r, s = decode_dss_signature(key.sign(bytes(out[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
    out[0x2A0:0x2E8] = r.to_bytes(72, "little")
    out[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(out)


def with_snp_policy(report: bytes, policy: int) -> bytes:
    out = bytearray(report)
    struct.pack_into("<Q", out, 0x08, policy)
    return bytes(out)


AMD_OID = "1.3.6.1.4.1.3704.1."


class SnpForge:
    """ARK-Milan → ASK (pathLen 0) → VCEK made here; the VCEK keeps a real VCEK's AMD extensions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, case: dict[str, Any]) -> None:
        real = load_certificates(vector_path("sev-snp", case["signing_cert"]).read_bytes(), "v")[0]
        self.amd = [e for e in real.extensions if e.oid.dotted_string.startswith(AMD_OID)]
        self.ark_key, self.ask_key, self.vcek_key = p384(), p384(), p384()
        self.ark = issue("ARK-Milan", self.ark_key)
        self.ask = issue("SEV-Milan", self.ask_key, ("ARK-Milan", self.ark_key), path_length=0)
        self.vcek = issue("SEV-VCEK", self.vcek_key, ("SEV-Milan", self.ask_key), self.amd, None)
        self.report = snp_report(case)
        monkeypatch.setattr(_snp, "pinned_root", lambda n: self.ark if n == "amd_ark_milan"
                            else pinned_root(n))

    def sign(self, report: bytes | None = None) -> bytes:
        return sign_snp(self.report if report is None else report, self.vcek_key)

    def certs(self, *extra: x509.Certificate) -> bytes:
        return to_pem([*extra, self.vcek, self.ask, self.ark])


def raw_p256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def with_pck_chain(quote: bytes, chain_pem: bytes,
                   qe_signer: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """Rebuild a TDX quote with another PCK chain (outside the signed bytes); ``qe_signer``
    re-signs the QE report for it."""
    parsed = parse_tdx_quote(quote)
    qe_sig = (parsed.qe_report_signature if qe_signer is None
              else raw_p256(qe_signer, parsed.qe_report.raw))
    qe = (parsed.qe_report.raw + qe_sig
          + struct.pack("<H", len(parsed.qe_auth_data)) + parsed.qe_auth_data
          + struct.pack("<HI", 5, len(chain_pem)) + chain_pem)
    sig = parsed.signature + parsed.attestation_key + struct.pack("<HI", 6, len(qe)) + qe
    return parsed.signed + struct.pack("<I", len(sig)) + sig


TDX_V4 = "go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat"
TCB_INFO_V4 = "go-tdx-guest_tcbinfo_fmspc_50806f000000.json"


class TdxForge:
    """Intel SGX Root CA → PCK Platform CA → PCK (the real SGX extension) and TCB Signing, made
    here; the real v4 quote, TCB info and QE identity are re-signed under them."""

    ROOT, PCA = "Intel SGX Root CA", "Intel SGX PCK Platform CA"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.original = vector_path("tdx", TDX_V4).read_bytes()
        real = load_certificates(parse_tdx_quote(self.original).pck_chain_pem, "pck")[0]
        self.sgx = real.extensions.get_extension_for_oid(x509.ObjectIdentifier(_tdx._SGX_EXT))
        self.keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("root", "pca", "pck", "tcb")}
        self.root = issue(self.ROOT, self.keys["root"], path_length=1)
        self.pca = issue(self.PCA, self.keys["pca"], (self.ROOT, self.keys["root"]), path_length=0)
        self.pck = issue("Intel SGX PCK Certificate", self.keys["pck"],
                         (self.PCA, self.keys["pca"]), [self.sgx], ca=False)
        self.tcbs = issue("Intel SGX TCB Signing", self.keys["tcb"],
                          (self.ROOT, self.keys["root"]), ca=False)
        for module in (_tdx, _tdx_collateral):
            monkeypatch.setattr(module, "pinned_root", lambda _name: self.root)

    def quote(self, chain: Sequence[x509.Certificate] | None = None,
              qe_signer: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        chain = chain or [self.pck, self.pca, self.root]
        return with_pck_chain(self.original, to_pem(list(chain)), qe_signer or self.keys["pck"])

    def resigned(self, signed: bytes,
                 qe_edit: Callable[[bytearray], None] | None = None) -> bytes:
        """The real v4 quote with other signed bytes (header and TD report), signed by a new
        attestation key that a QE report, signed by this forge's PCK, certifies; ``qe_edit``
        changes that QE report (an SGX REPORTBODY) first."""
        quote = parse_tdx_quote(self.original)
        attestation = ec.generate_private_key(ec.SECP256R1())
        point = attestation.public_key().public_numbers()
        key = point.x.to_bytes(32) + point.y.to_bytes(32)
        qe = bytearray(quote.qe_report.raw)
        if qe_edit is not None:
            qe_edit(qe)
        qe[320:384] = hashlib.sha256(key + quote.qe_auth_data).digest() + bytes(32)
        chain = to_pem([self.pck, self.pca, self.root])
        qe_data = (bytes(qe) + raw_p256(self.keys["pck"], bytes(qe))
                   + struct.pack("<H", len(quote.qe_auth_data)) + quote.qe_auth_data
                   + struct.pack("<HI", 5, len(chain)) + chain)
        sig = raw_p256(attestation, signed) + key + struct.pack("<HI", 6, len(qe_data)) + qe_data
        return signed + struct.pack("<I", len(sig)) + sig

    def signed_doc(self, name: str, raw_body: bytes, extra: bytes = b"") -> bytes:
        """A PCS document ``{name: raw_body, "signature": ...}`` signed by our TCB Signing key."""
        sig = raw_p256(self.keys["tcb"], raw_body).hex().encode()
        return b'{"' + name.encode() + b'":' + raw_body + b',"signature":"' + sig + b'"' + extra + b"}"

    @staticmethod
    def raw_body(name: str, file: str) -> bytes:
        return _raw_member(vector_path("tdx", file).read_text(), name)[1]

    def crl(self, issuer: str, revoked: Sequence[int] = ()) -> bytes:
        cert = {"root": self.root, "pca": self.pca, "pck": self.pck}[issuer]
        return make_crl(cert, self.keys[issuer], revoked)

    def collateral(self, **overrides: Any) -> Collateral:
        base: dict[str, Any] = {
            "tcb_infos": (self.signed_doc("tcbInfo", self.raw_body("tcbInfo", TCB_INFO_V4)),),
            "qe_identity": self.signed_doc("enclaveIdentity", self.raw_body(
                "enclaveIdentity", "go-tdx-guest_qe_identity.json")),
            "tcb_signing_chain": to_pem([self.tcbs, self.root]),
            "pck_crl": self.crl("pca"), "root_crl": self.crl("root"),
        }
        return Collateral(**{**base, **overrides})
