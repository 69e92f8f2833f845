"""Crafted inputs that must fail with a `VerificationError` (never another exception), and
checks that must not be skipped."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from proxy.attestation import (
    Evidence,
    IdentityService,
    SimulatedProvider,
    VerificationError,
    VerificationPolicy,
    _der,
    verify_evidence,
    verify_identity,
    verify_nvidia,
    verify_sev_snp,
    verify_tdx,
)
from proxy.attestation._tdx import _SGX_EXT
from proxy.attestation._x509 import load_certificates
from tests.attestation._support import (
    SNP_AT,
    TCB_INFO_V4,
    TDX_V4_AT,
    TdxForge,
    issue,
    snp_case,
    snp_certs,
    snp_report,
    to_pem,
)
from tests.conftest import load_vector, vector_path

M = "a1" * 48
PINNED = VerificationPolicy(allowed_measurements=frozenset({M}), allow_simulated=True)


def _document() -> dict[str, Any]:
    service = IdentityService(SimulatedProvider(M), lambda: b"\x01" * 41, bytes(32),
                              lambda: "sha256:" + "ab" * 32, M)
    return asyncio.run(service.document(None))


def _code(call: Any) -> str:
    with pytest.raises(VerificationError) as info:
        call()
    return info.value.code


def _unknown_key_cert(subject: str) -> x509.Certificate:
    """A certificate whose key algorithm the crypto library does not know."""
    der = issue(subject, ec.generate_private_key(ec.SECP384R1()), ca=None).public_bytes(Encoding.DER)
    spki_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, once: in the key info
    assert der.count(spki_oid) == 1
    return x509.load_der_x509_certificate(der.replace(spki_oid, bytes.fromhex("06072a8648ce3d0209")))


@pytest.mark.parametrize("in_gpu", [False, True])
@pytest.mark.parametrize("platform", [["sev-snp"], {"sev-snp": 1}])
def test_evidence_platform_of_the_wrong_type_is_malformed(in_gpu: bool, platform: Any) -> None:
    """An unhashable ``platform`` (a JSON list or object) is refused as malformed, not a
    TypeError from the membership test."""
    doc = _document()
    if in_gpu:
        doc["evidence"]["gpus"] = [{"platform": platform, "report": ""}]
    else:
        doc["evidence"]["platform"] = platform
    assert _code(lambda: verify_identity(doc, PINNED)) == "document_malformed"


@pytest.mark.parametrize("field", ["measurement", "policy_digest"])
def test_bound_text_that_cannot_be_canonicalized_is_malformed(field: str) -> None:
    """JSON may carry a lone surrogate (``"\\ud800"``), which RFC 8785 cannot encode: the
    document is malformed, not a CanonicalizationError."""
    doc = _document()
    doc[field] = json.loads('"\\ud800"')
    assert _code(lambda: verify_identity(doc, PINNED)) == "document_malformed"
    doc[field] = 7
    assert _code(lambda: verify_identity(doc, PINNED)) == "document_malformed"


def test_unencodable_provider_name_is_malformed() -> None:
    """``provider`` is not signed; whatever it holds, the evidence digest must be computable."""
    doc = _document()
    verify_identity(doc, PINNED)
    doc["evidence"]["provider"] = json.loads('"\\ud800"')
    assert _code(lambda: verify_identity(doc, PINNED)) == "document_malformed"


def test_nan_max_age_does_not_disable_the_age_check() -> None:
    doc = _document()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_mapping({"max_age_s": float("nan")})
    assert info.value.code == "policy_invalid"
    policy = VerificationPolicy(allowed_measurements=frozenset({M}), allow_simulated=True,
                                max_age_s=float("nan"))
    assert _code(lambda: verify_identity(doc, policy, now=later)) == "document_expired"


def test_unusable_certificate_named_like_the_vcek_is_skipped() -> None:
    """Host-supplied certificates: one named ``SEV-VCEK`` with an unknown key algorithm, listed
    before the genuine VCEK, must neither crash the verifier nor hide the genuine one."""
    case = snp_case("virtee-sev_report_milan.bin")
    genuine = load_certificates(snp_certs(case), "certificates")
    pool = to_pem([_unknown_key_cert("SEV-VCEK"), *genuine])
    verdict = verify_sev_snp(snp_report(case), pool, at=SNP_AT)
    assert verdict.measurement == case["fields"]["measurement"]
    alone = to_pem([_unknown_key_cert("SEV-VCEK"), *genuine[1:]])
    assert _code(lambda: verify_sev_snp(snp_report(case), alone, at=SNP_AT)) == (
        "report_signature_invalid")


def test_unusable_certificate_beside_the_gpu_chain_is_skipped() -> None:
    manifest = load_vector("nvidia-gpu", "manifest.json")
    report = bytes.fromhex(vector_path("nvidia-gpu", manifest["report"]).read_text().strip())
    chain = load_certificates(vector_path("nvidia-gpu", manifest["cert_chain"]).read_bytes(), "c")
    pool = to_pem([_unknown_key_cert("GH100 A01 GSP FMC LF"), *chain])
    verdict = verify_nvidia(report, pool, expected_nonce=bytes.fromhex(manifest["request_nonce"]))
    assert verdict.report_data.hex() == manifest["request_nonce"]


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> TdxForge:
    return TdxForge(monkeypatch)


def test_pcs_document_dates_without_a_zone_are_invalid(forge: TdxForge) -> None:
    info = json.loads(forge.raw_body("tcbInfo", TCB_INFO_V4))
    info["issueDate"] = info["issueDate"].removesuffix("Z")
    body = json.dumps(info, separators=(",", ":")).encode()
    collateral = forge.collateral(tcb_infos=(forge.signed_doc("tcbInfo", body),))
    assert _code(lambda: verify_tdx(forge.quote(), collateral, at=TDX_V4_AT)) == (
        "collateral_invalid")


def test_pck_with_a_p384_key_is_refused(forge: TdxForge) -> None:
    """The QE report is checked with a P-256 PCK key; another curve is a chain error, not an
    OverflowError (through `verify_evidence` too)."""
    pck = issue("Intel SGX PCK Certificate", ec.generate_private_key(ec.SECP384R1()),
                (forge.PCA, forge.keys["pca"]), [forge.sgx], ca=False)
    quote = forge.quote([pck, forge.pca, forge.root])
    assert _code(lambda: verify_tdx(quote, None, at=TDX_V4_AT)) == "cert_chain_invalid"
    assert _code(lambda: verify_evidence(Evidence("tdx", quote), at=TDX_V4_AT)) == (
        "cert_chain_invalid")


def _tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    if size < 0x80:
        return bytes([tag, size]) + value
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + value


def test_pck_sgx_extension_without_fmspc_is_a_chain_error(forge: TdxForge) -> None:
    ext = forge.sgx.value
    assert isinstance(ext, x509.UnrecognizedExtension)
    kept = b"".join(_tlv(tag, value) for tag, value in _der.children(_der.read_tlv(ext.value)[1])
                    if _der.read_oid(_der.children(value)[0][1]) != f"{_SGX_EXT}.4")
    oid = x509.ObjectIdentifier(_SGX_EXT)
    stripped = x509.Extension(oid, False, x509.UnrecognizedExtension(oid, _tlv(0x30, kept)))
    pck = issue("Intel SGX PCK Certificate", forge.keys["pck"], (forge.PCA, forge.keys["pca"]),
                [stripped], ca=False)
    quote = forge.quote([pck, forge.pca, forge.root])
    assert _code(lambda: verify_tdx(quote, None, at=TDX_V4_AT)) == "cert_chain_invalid"
