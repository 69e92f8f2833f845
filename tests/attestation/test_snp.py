"""SEV-SNP: every vector report verifies; each mutation fails with its own code."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from proxy.attestation import VerificationError, VerificationPolicy, verify_sev_snp
from proxy.attestation._snp import _check_binding
from proxy.attestation._snp_report import decode_tcb, parse_snp_report
from proxy.attestation._x509 import build_chain, load_certificates, pinned_root, verify_chain
from tests.attestation._support import (
    SNP_AT,
    SnpForge,
    flip,
    forged_chain,
    issue,
    need_case,
    p384,
    sign_snp,
    snp_case,
    snp_certs,
    snp_report,
    to_pem,
    vector_cases,
    with_snp_policy,
)
from tests.conftest import load_vector, vector_path

CASES = vector_cases("sev-snp", "reports", "report")
MILAN = "virtee-sev_report_milan.bin"
DEBUG = "go-sev-guest_attestation.bin"
ANY = VerificationPolicy(allow_any_measurement=True)


def _milan() -> tuple[bytes, bytes]:
    case = snp_case(MILAN)
    return snp_report(case), snp_certs(case)


def _verify(report: bytes, certs: bytes, at: dt.datetime | None = SNP_AT) -> Any:
    return verify_sev_snp(report, certs, at=at)


def _code(report: bytes, certs: bytes, at: dt.datetime | None = SNP_AT) -> str:
    with pytest.raises(VerificationError) as info:
        _verify(report, certs, at)
    return info.value.code


@pytest.mark.parametrize("case", CASES)
def test_vector_report_verifies(case: dict[str, Any] | None) -> None:
    case = need_case(case, "sev-snp")
    verdict = _verify(snp_report(case), snp_certs(case))
    fields = case["fields"]
    assert verdict.measurement == fields["measurement"]
    assert verdict.report_data.hex() == fields["report_data"]
    assert verdict.tcb["bootloader"] == fields["reported_tcb"]["bootloader"]
    assert verdict.tcb["microcode"] == fields["reported_tcb"]["microcode"]
    assert verdict.debug == bool(int(fields["policy"], 16) >> 19 & 1)
    assert verdict.migration_agent == bool(int(fields["policy"], 16) >> 18 & 1)
    assert verdict.claims["product"] == case["product"].split()[0]


@pytest.mark.parametrize("case", CASES)
def test_parse_matches_manifest(case: dict[str, Any] | None) -> None:
    case = need_case(case, "sev-snp")
    parsed = parse_snp_report(snp_report(case))
    fields = case["fields"]
    assert parsed.version == fields["version"] and parsed.guest_svn == fields["guest_svn"]
    assert hex(parsed.policy) == fields["policy"] and parsed.vmpl == fields["vmpl"]
    assert parsed.family_id.hex() == fields["family_id"]
    assert parsed.image_id.hex() == fields["image_id"]
    assert parsed.chip_id.hex() == fields["chip_id"]
    assert parsed.host_data.hex() == fields["host_data"]
    assert parsed.id_key_digest.hex() == fields["id_key_digest"]
    assert parsed.report_id.hex() == fields["report_id"]
    assert parsed.report_id_ma.hex() == fields["report_id_ma"]
    assert parsed.cpuid_fam_mod_step.hex() == fields["cpuid_fam_mod_step"]
    assert parsed.current_version == fields["current_version"]
    assert parsed.committed_version == fields["committed_version"]
    for tcb in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        assert hex(getattr(parsed, tcb)) == fields[tcb]["raw"]
    assert hex(parsed.signer_info) == fields["signer_info"]


# Offsets: 0x10 family id (signed body), 0x90 measurement, 0x50 REPORT_DATA, 0x2A0 signature r.
@pytest.mark.parametrize("offset", [0x10, 0x90, 0x50, 0x2A0, 0x2E8],
                         ids=["body", "measurement", "report_data", "signature_r", "signature_s"])
def test_bit_flip_breaks_signature(offset: int) -> None:
    report, certs = _milan()
    assert _code(flip(report, offset), certs) == "report_signature_invalid"


def test_wrong_vcek() -> None:
    certs = snp_certs(snp_case(MILAN), leaf="trustee_vcek_milan.der")
    assert _code(_milan()[0], certs) == "report_signature_invalid"


def test_truncated_report() -> None:
    report, certs = _milan()
    assert _code(report[:-1], certs) == "report_malformed"


def test_no_signing_certificate() -> None:
    chain = vector_path("sev-snp", "ask_ark_milan.pem").read_bytes()
    assert _code(_milan()[0], chain) == "cert_chain_invalid"


def test_wrong_root_forged_chain() -> None:
    """A report re-signed under a look-alike ARK/ASK/VCEK chain: the root is not pinned."""
    vcek_der = vector_path("sev-snp", snp_case(MILAN)["signing_cert"]).read_bytes()
    real_vcek = load_certificates(vcek_der, "v")[0]
    amd = [e for e in real_vcek.extensions if e.oid.dotted_string.startswith("1.3.6.1.4.1.3704")]
    key = ec.generate_private_key(ec.SECP384R1())
    chain = forged_chain(["ARK-Milan", "SEV-Milan", "SEV-VCEK"], key, amd)
    assert _code(sign_snp(_milan()[0], key), to_pem(chain)) == "root_not_trusted"


def test_debug_bit_flip_breaks_signature() -> None:
    report, certs = _milan()
    report = flip(report, 0x08 + 19 // 8, 19 % 8)
    assert parse_snp_report(report).debug
    assert _code(report, certs) == "report_signature_invalid"


def test_debug_policy_refused() -> None:
    case = snp_case(DEBUG)
    verdict = _verify(snp_report(case), snp_certs(case))
    assert verdict.debug
    with pytest.raises(VerificationError) as info:
        ANY.check(verdict)
    assert info.value.code == "debug_enabled"
    dataclasses.replace(ANY, allow_debug=True).check(verdict)


def test_tcb_below_minimum() -> None:
    verdict = _verify(*_milan())
    dataclasses.replace(ANY, min_tcb={"sev-snp": {"snp": 8, "microcode": 115}}).check(verdict)
    with pytest.raises(VerificationError) as info:
        dataclasses.replace(ANY, min_tcb={"sev-snp": {"snp": 9}}).check(verdict)
    assert info.value.code == "tcb_below_minimum"


def test_measurement_allowlist() -> None:
    verdict = _verify(*_milan())
    measurement = snp_case(MILAN)["fields"]["measurement"]
    VerificationPolicy(allowed_measurements=frozenset({measurement})).check(verdict)
    with pytest.raises(VerificationError) as info:
        VerificationPolicy(allowed_measurements=frozenset({"00" * 48})).check(verdict)
    assert info.value.code == "measurement_not_allowed"


def test_no_allowlist_refused_unless_any_measurement_allowed() -> None:
    verdict = _verify(*_milan())
    with pytest.raises(VerificationError) as info:
        VerificationPolicy().check(verdict)
    assert info.value.code == "measurement_not_allowed" and "no measurement allowlist" in str(
        info.value)
    assert any("no measurement allowlist" in n for n in ANY.check(verdict))


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> SnpForge:
    return SnpForge(monkeypatch, snp_case(MILAN))


def test_forged_baseline_verifies(forge: SnpForge) -> None:
    verdict = _verify(forge.sign(), forge.certs())
    assert verdict.measurement == snp_case(MILAN)["fields"]["measurement"]
    assert not verdict.migration_agent


def test_migrate_ma_refused(forge: SnpForge) -> None:
    """GUEST_POLICY.MIGRATE_MA (bit 18): a migration agent could export guest memory."""
    report = forge.sign(with_snp_policy(forge.report, 0x30000 | 1 << 18))
    verdict = _verify(report, forge.certs())
    assert verdict.migration_agent and not verdict.debug
    pinned = VerificationPolicy(allowed_measurements=frozenset({verdict.measurement}))
    with pytest.raises(VerificationError) as info:
        pinned.check(verdict)
    assert info.value.code == "migration_agent_allowed"
    dataclasses.replace(pinned, allow_migration_agent=True).check(verdict)


def test_vcek_cannot_issue_a_vcek(forge: SnpForge) -> None:
    """A VCEK (no basicConstraints, so not a CA) signing a 'SEV-VCEK' of the attacker's."""
    key = p384()
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEV-VCEK"),
                         x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "evil")])
    evil = issue(subject, key, (forge.vcek.subject, forge.vcek_key), forge.amd, None)
    assert _code(sign_snp(forge.report, key), forge.certs(evil)) == "cert_chain_invalid"


def test_ask_path_length(forge: SnpForge) -> None:
    """The ASK has pathLenConstraint 0: no CA may sit between it and the VCEK."""
    mid_key, key = p384(), p384()
    mid = issue("SEV-Milan-Sub", mid_key, (forge.ask.subject, forge.ask_key))
    leaf = issue("SEV-VCEK", key, ("SEV-Milan-Sub", mid_key), forge.amd, None)
    pool = to_pem([leaf, mid, forge.ask, forge.ark])
    assert _code(sign_snp(forge.report, key), pool) == "cert_chain_invalid"


def test_expired_vlek_without_pinned_time() -> None:
    vlek = snp_case("trustee_vlek_report_milan.bin")
    at = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    assert _code(snp_report(vlek), snp_certs(vlek), at=at) == "collateral_expired"


def test_chip_id_and_tcb_bound_to_vcek() -> None:
    parsed = parse_snp_report(_milan()[0])
    other = load_certificates(vector_path("sev-snp", "trustee_vcek_milan.der").read_bytes(), "v")[0]
    tcb = decode_tcb(parsed.reported_tcb, "Milan")
    with pytest.raises(VerificationError) as info:
        _check_binding(parsed, other, tcb)
    assert info.value.code == "chip_id_mismatch"
    own_der = vector_path("sev-snp", snp_case(MILAN)["signing_cert"]).read_bytes()
    own = load_certificates(own_der, "v")[0]
    with pytest.raises(VerificationError) as info:
        _check_binding(parsed, own, {**tcb, "snp": tcb["snp"] + 1})
    assert info.value.code == "tcb_mismatch"


def test_turin_tcb_layout_and_chain() -> None:
    turin = load_vector("sev-snp", "manifest.json")["certs_without_report"][0]
    ext = turin["cert_extensions"]
    raw = bytes([ext["fmcSPL"], ext["blSPL"], ext["teeSPL"], ext["snpSPL"], 0, 0, 0,
                 ext["ucodeSPL"]])
    decoded = decode_tcb(int.from_bytes(raw, "little"), "Turin")
    assert decoded == {"fmc": 0, "bootloader": 0, "tee": 0, "snp": 0, "microcode": 9}
    leaf = load_certificates(vector_path("sev-snp", turin["cert"]).read_bytes(), "v")[0]
    pool = load_certificates(vector_path("sev-snp", turin["cert_chain"]).read_bytes(), "c")
    root = verify_chain(build_chain(leaf, pool), [pinned_root("amd_ark_turin")], SNP_AT, "t")
    assert root == pinned_root("amd_ark_turin")
    parsed = parse_snp_report(_milan()[0])
    hwid = bytes.fromhex(ext["hwID"])
    report = dataclasses.replace(parsed, chip_id=hwid + bytes(56),
                                 reported_tcb=int.from_bytes(raw, "little"))
    _check_binding(report, leaf, decoded)


@pytest.mark.parametrize("name", ["amd_ark_milan", "amd_ark_genoa", "amd_ark_turin"])
def test_pinned_arks_are_self_signed(name: str) -> None:
    root = pinned_root(name)
    root.verify_directly_issued_by(root)
    assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value.startswith("ARK-")


def test_an_unusable_certificate_beside_the_chain_is_skipped() -> None:
    """The host supplies the certificates: one whose key algorithm the crypto library does not
    know, named like the ASK, neither hides the genuine chain nor crashes the verifier."""
    case = snp_case(MILAN)
    genuine = load_certificates(snp_certs(case), "certificates")
    key = ec.generate_private_key(ec.SECP384R1())
    signer = next(c for c in genuine if c.subject == genuine[0].issuer)  # the VCEK's issuer
    der = issue(signer.subject, key).public_bytes(Encoding.DER)
    spki_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, once: in the key info
    assert der.count(spki_oid) == 1
    odd = x509.load_der_x509_certificate(der.replace(spki_oid, bytes.fromhex("06072a8648ce3d0209")))
    verdict = _verify(snp_report(case), to_pem([genuine[0], odd, *genuine[1:]]))
    assert verdict.measurement == case["fields"]["measurement"]

