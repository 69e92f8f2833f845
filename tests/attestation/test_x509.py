"""Chains and CRLs: CA constraints on every issuer (RFC 5280 §6.1.4), CRL coverage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509

from proxy.attestation import VerificationError
from proxy.attestation._tdx_quote import parse_tdx_quote
from proxy.attestation._x509 import build_chain, check_crl, load_certificates, pinned_root, verify_chain
from tests.attestation._support import issue, make_crl, p384
from tests.conftest import vector_path

AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _certs(folder: str, name: str) -> list[x509.Certificate]:
    return load_certificates(vector_path(folder, name).read_bytes(), name)


def _pck_chain(quote: str) -> list[x509.Certificate]:
    return load_certificates(parse_tdx_quote(vector_path("tdx", quote).read_bytes()).pck_chain_pem, "q")


# Every real vendor chain in the vectors meets the CA profile (leaf first, pinned root, time).
REAL_CHAINS = {
    "milan-vcek": (lambda: _certs("sev-snp", "virtee-sev_vcek_milan.der")
                   + _certs("sev-snp", "ask_ark_milan.pem"), "amd_ark_milan", "2025-06-01"),
    "milan-vlek": (lambda: _certs("sev-snp", "trustee_vlek_milan.der")
                   + _certs("sev-snp", "ask_ark_milan_vlek.pem"), "amd_ark_milan", "2025-06-01"),
    "genoa-vcek": (lambda: _certs("sev-snp", "trustee-azure_vcek_genoa.pem")
                   + _certs("sev-snp", "ask_ark_genoa.pem"), "amd_ark_genoa", "2025-06-01"),
    "turin-vcek": (lambda: _certs("sev-snp", "virtee-sev_vcek_turin.der")
                   + _certs("sev-snp", "ask_ark_turin_vcek.pem"), "amd_ark_turin", "2025-06-01"),
    "tdx-pck-v4": (lambda: _pck_chain("go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat"),
                   "intel_sgx_root_ca", "2023-06-20"),
    "tdx-pck-v5": (lambda: _pck_chain("go-tdx-guest_quote_v5_sample.dat"),
                   "intel_sgx_root_ca", "2026-02-10"),
    "tdx-tcb-signing": (lambda: _certs("tdx", "go-tdx-guest_tcb_signing_issuer_chain.pem"),
                        "intel_sgx_root_ca", "2023-06-20"),
    "nvidia-gpu": (lambda: _certs("nvidia-gpu", "nvtrust_hopperCertChain.txt"),
                   "nvidia_device_identity_ca", "2025-06-01"),
}


@pytest.mark.parametrize("chain_id", sorted(REAL_CHAINS))
def test_real_chains_meet_the_ca_profile(chain_id: str) -> None:
    load, root, when = REAL_CHAINS[chain_id]
    pool = load()
    chain = build_chain(pool[0], pool)
    at = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
    assert verify_chain(chain, [pinned_root(root)], at, chain_id) == pinned_root(root)


def _three(leaf_ca: bool | None = False, mid_usage: x509.KeyUsage | None = None,
           root_path_length: int | None = None) -> list[x509.Certificate]:
    """leaf ← mid ← root, with the constraints under test."""
    root_key, mid_key = p384(), p384()
    root = issue("Root", root_key, path_length=root_path_length)
    mid_ext = [x509.Extension(x509.KeyUsage.oid, True, mid_usage)] if mid_usage else []
    mid = issue("Mid", mid_key, ("Root", root_key), mid_ext)
    return [issue("Leaf", p384(), ("Mid", mid_key), ca=leaf_ca), mid, root]


def _usage(cert_sign: bool, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def _non_ca_root() -> list[x509.Certificate]:
    root_key = p384()
    return [issue("Leaf", p384(), ("Root", root_key), ca=False), issue("Root", root_key, ca=False)]


@pytest.mark.parametrize(("chain", "detail"), [
    (lambda: _three(leaf_ca=True), "leaf is a CA"),
    (lambda: _three(mid_usage=_usage(cert_sign=False, crl_sign=True)), "is not a CA"),
    (lambda: _three(root_path_length=0), "path length exceeded"),
    (_non_ca_root, "is not a CA"),
], ids=["leaf-is-ca", "issuer-without-keyCertSign", "root-pathlen-0", "root-not-ca"])
def test_ca_constraints(chain: Callable[[], list[x509.Certificate]], detail: str) -> None:
    certs = chain()
    with pytest.raises(VerificationError) as info:
        verify_chain(certs, [certs[-1]], AT, "test")
    assert info.value.code == "cert_chain_invalid" and detail in info.value.detail


def test_ca_constraints_allow_the_good_shape() -> None:
    certs = _three(leaf_ca=None, mid_usage=_usage(cert_sign=True, crl_sign=False),
                   root_path_length=1)
    assert verify_chain(certs, [certs[-1]], AT, "test") == certs[-1]


def test_crl_revoked_and_coverage() -> None:
    ca_key, other_key = p384(), p384()
    ca = issue("Test CA", ca_key)
    leaf = issue("leaf", p384(), ("Test CA", ca_key), ca=False)
    stranger = issue("stranger", p384(), ("Other CA", other_key), ca=False)
    crl = x509.load_der_x509_crl(make_crl(ca, ca_key, [leaf.serial_number], at=AT))
    later = AT + dt.timedelta(days=1)
    with pytest.raises(VerificationError) as info:
        check_crl(crl, ca, [leaf], later, "test")
    assert info.value.code == "crl_revoked"
    check_crl(crl, ca, [ca], later, "test")
    with pytest.raises(VerificationError) as info:  # not issued by the CRL issuer: not skipped
        check_crl(crl, ca, [stranger], later, "test")
    assert info.value.code == "collateral_invalid"


def test_crl_issuer_must_be_a_crl_signing_ca() -> None:
    key = p384()
    for issuer in (issue("Not CA", key, ca=False),
                   issue("No crlSign", key, extensions=[x509.Extension(
                       x509.KeyUsage.oid, True, _usage(cert_sign=True, crl_sign=False))])):
        crl = x509.load_der_x509_crl(make_crl(issuer, key, at=AT))
        with pytest.raises(VerificationError) as info:
            check_crl(crl, issuer, [], AT + dt.timedelta(days=1), "test")
        assert info.value.code == "collateral_invalid"
