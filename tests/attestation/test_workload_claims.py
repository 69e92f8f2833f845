"""What the launch measurement does not say: the workload fields ``required_claims`` pins, the
TCB a SEV-SNP guest was launched under, a policy file the environment may not loosen, and
hostile inputs that must end in a `VerificationError`, never another exception."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from proxy.attestation import (
    Evidence,
    VerificationError,
    VerificationPolicy,
    verify_evidence,
    verify_sev_snp,
    verify_tdx,
)
from proxy.attestation._x509 import load_certificates
from tests.attestation._support import (
    SNP_AT,
    TDX_V4,
    TDX_V4_AT,
    SnpForge,
    snp_case,
    snp_certs,
    snp_report,
    with_pck_chain,
)
from tests.conftest import vector_path

ANY = VerificationPolicy(allow_any_measurement=True)
MILAN = "virtee-sev_report_milan.bin"
VLEK = "trustee_vlek_report_milan.bin"


def _snp(report: str = MILAN) -> Any:
    case = snp_case(report)
    return verify_sev_snp(snp_report(case), snp_certs(case), at=SNP_AT)


def _tdx() -> Any:
    return verify_tdx(vector_path("tdx", TDX_V4).read_bytes(), None, at=TDX_V4_AT)


def _refused(policy: VerificationPolicy, verdict: Any) -> str:
    with pytest.raises(VerificationError) as info:
        policy.check(verdict)
    return info.value.code


def _claims(doc: dict[str, Any]) -> VerificationPolicy:
    return VerificationPolicy.from_mapping({"allow_any_measurement": True,
                                            "require_tcb_status": False, "required_claims": doc})


def test_sev_snp_workload_fields_are_pinned_by_required_claims() -> None:
    """Same launch measurement, other init-data (Kata's HOST_DATA) or another VMPL: refused
    once the policy names the accepted values; a list accepts any of its values."""
    verdict = _snp()
    host_data = verdict.claims["host_data"]
    _claims({"sev-snp": {"host_data": host_data.upper(), "vmpl": 0}}).check(verdict)
    _claims({"sev-snp": {"host_data": ["ab" * 32, host_data]}}).check(verdict)
    assert _refused(_claims({"sev-snp": {"host_data": "ab" * 32}}), verdict) == "claim_not_allowed"
    vlek = _snp(VLEK)
    assert vlek.claims["vmpl"] == 1
    assert _refused(_claims({"sev-snp": {"vmpl": 0}}), vlek) == "claim_not_allowed"
    _claims({"sev-snp": {"vmpl": [0, 1]}}).check(vlek)
    _claims({"tdx": {"rtmr0": "00" * 48}}).check(verdict)  # another platform's claims: not this


def test_tdx_workload_fields_are_pinned_by_required_claims() -> None:
    verdict = _tdx()
    rtmrs = verdict.claims["rtmrs"]
    wanted = {f"rtmr{i}": value for i, value in enumerate(rtmrs)}
    _claims({"tdx": {**wanted, "mr_config_id": verdict.claims["mr_config_id"]}}).check(verdict)
    for name in ("rtmr0", "rtmr3", "mr_config_id", "mr_owner"):
        assert _refused(_claims({"tdx": {name: "ee" * 48}}), verdict) == "claim_not_allowed", name


@pytest.mark.parametrize("doc", [
    {"sev-snp": {"hostdata": "00"}},  # misspelt: would drop the check
    {"sev-snp": {"rtmr0": "00"}},  # another platform's field
    {"sgx": {"mr_enclave": "00"}},
    {"sev-snp": {"vmpl": "0"}},
    {"sev-snp": {"vmpl": True}},
    {"sev-snp": {"host_data": "not hex"}},
    {"sev-snp": {"host_data": []}},
    {"sev-snp": ["host_data"]},
])
def test_required_claims_that_would_check_nothing_are_invalid(doc: Any) -> None:
    with pytest.raises(VerificationError) as info:
        _claims(doc)
    assert info.value.code == "policy_invalid"


def test_sev_snp_minimum_tcb_judges_the_tcb_the_guest_was_launched_under(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest launched under older firmware (LAUNCH_TCB, COMMITTED_TCB below REPORTED_TCB
    after a live firmware update) is judged by the lowest of the three."""
    forge = SnpForge(monkeypatch, snp_case(MILAN))
    minimum = dataclasses.replace(ANY, min_tcb={"sev-snp": {"snp": 8, "microcode": 115}})
    minimum.check(verify_sev_snp(forge.sign(), forge.certs(), at=SNP_AT))
    for offset in (0x1E0, 0x1F0):  # COMMITTED_TCB, LAUNCH_TCB
        report = bytearray(forge.report)
        struct.pack_into("<Q", report, offset, 0)
        verdict = verify_sev_snp(forge.sign(bytes(report)), forge.certs(), at=SNP_AT)
        assert verdict.claims["reported_tcb"]["snp"] == 8
        assert _refused(minimum, verdict) == "tcb_below_minimum", hex(offset)


def test_the_environment_may_tighten_the_policy_file_but_not_loosen_it(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"allow_simulated": False, "allow_any_measurement": False}))
    for variable in ("SEALGATE_ALLOW_SIMULATED", "SEALGATE_ALLOW_ANY_MEASUREMENT"):
        with pytest.raises(VerificationError) as info:
            VerificationPolicy.from_env({"SEALGATE_VERIFY_POLICY": str(path), variable: "1"})
        assert info.value.code == "policy_invalid" and variable in str(info.value)
        policy = VerificationPolicy.from_env({"SEALGATE_VERIFY_POLICY": str(path), variable: "0"})
        assert not policy.allow_simulated and not policy.allow_any_measurement


def _bad_version(der: bytes) -> bytes:
    """The certificate with its X.509 version field set to 0x7e (cryptography raises
    InvalidVersion, which is not a ValueError)."""
    out = bytearray(der)
    at = out.find(bytes.fromhex("a003020102"))  # [0] EXPLICIT INTEGER 2 (v3)
    out[at + 4] = 0x7e
    return bytes(out)


def _pem(der: bytes) -> bytes:
    return (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der)
            + b"-----END CERTIFICATE-----\n")


def test_hostile_certificates_and_reports_are_refused_never_raised() -> None:
    """Host-supplied certificates and reports reach the parsers: each ends in a refusal."""
    case = snp_case(MILAN)
    vcek = vector_path("sev-snp", case["signing_cert"]).read_bytes()
    certs = _pem(_bad_version(vcek)) + vector_path("sev-snp", case["cert_chain"]).read_bytes()
    evidence = Evidence("sev-snp", snp_report(case), certs)
    with pytest.raises(VerificationError) as info:
        verify_evidence(evidence, at=SNP_AT)
    assert info.value.code == "cert_chain_invalid"

    from proxy.attestation._tdx_quote import parse_tdx_quote
    quote = vector_path("tdx", TDX_V4).read_bytes()
    chain = load_certificates(parse_tdx_quote(quote).pck_chain_pem, "pck")
    pck = _bad_version(chain[0].public_bytes(Encoding.DER))
    bad = with_pck_chain(quote, _pem(pck) + b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:]))
    with pytest.raises(VerificationError) as info:
        verify_tdx(bad, None, at=TDX_V4_AT)
    assert info.value.code == "cert_chain_invalid"

    nested = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(VerificationError) as info:
        verify_evidence(Evidence("simulated", nested))
    assert info.value.code == "report_malformed"
