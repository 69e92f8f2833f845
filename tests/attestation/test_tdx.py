"""TDX quotes v4/v5: full verification with collateral, mutations, collateral failures."""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.attestation import (
    Collateral,
    VerificationError,
    VerificationPolicy,
    _tdx,
    _tdx_collateral,
    verify_tdx,
)
from proxy.attestation._tdx import PckInfo
from proxy.attestation._tdx_quote import parse_tdx_quote
from proxy.attestation._tdx_tcb import level_status, module_status, relaunch_status
from proxy.attestation._x509 import load_certificates
from tests.attestation._support import (
    TCB_INFO_V4,
    TDX_V4_AT,
    TDX_V5_AT,
    TdxForge,
    flip,
    forged_chain,
    issue,
    need_case,
    to_pem,
    vector_cases,
    with_pck_chain,
)
from tests.conftest import vector_path

QUOTES = vector_cases("tdx", "quotes", "file")
V4 = "go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat"
ANY = VerificationPolicy(allow_any_measurement=True)
V5 = "go-tdx-guest_quote_v5_sample.dat"


def _quote(name: str) -> bytes:
    return vector_path("tdx", name).read_bytes()


def _collateral(**overrides: Any) -> Collateral:
    base = Collateral.from_dir(vector_path("tdx", "intel_sgx_root_ca.pem").parent)
    return Collateral(**{**base.__dict__, **overrides})


def _code(quote: bytes, collateral: Collateral | None, at: dt.datetime | None) -> str:
    with pytest.raises(VerificationError) as info:
        verify_tdx(quote, collateral, at=at)
    return info.value.code


@pytest.mark.parametrize("case", QUOTES)
def test_vector_quote_verifies(case: dict[str, Any] | None) -> None:
    case = need_case(case, "tdx")
    at = TDX_V4_AT if case["header"]["version"] == 4 else TDX_V5_AT
    verdict = verify_tdx(_quote(case["file"]), None, at=at)
    body = case["td_quote_body"]
    assert verdict.measurement == body["mr_td"]
    assert verdict.report_data.hex() == body["report_data"]
    assert verdict.claims["fmspc"] == case["fmspc"]
    assert [r for r in verdict.claims["rtmrs"]] == [body[f"rtmr{i}"] for i in range(4)]
    assert verdict.tcb["qe_svn"] == case["qe_isvsvn"]
    assert not verdict.debug and verdict.tcb_status is None


@pytest.mark.parametrize("case", QUOTES)
def test_parse_matches_manifest(case: dict[str, Any] | None) -> None:
    case = need_case(case, "tdx")
    quote = parse_tdx_quote(_quote(case["file"]))
    body = case["td_quote_body"]
    assert quote.version == case["header"]["version"]
    assert quote.qe_vendor_id.hex() == case["header"]["qe_vendor_id"]
    assert quote.body.tee_tcb_svn.hex() == body["tee_tcb_svn"]
    assert quote.body.mr_seam.hex() == body["mr_seam"]
    assert quote.body.td_attributes.hex() == body["td_attributes"]
    assert quote.body.xfam.hex() == body["xfam"]
    assert quote.attestation_key.hex() == case["attestation_key"]
    assert quote.qe_report.mr_enclave.hex() == case["qe_report_mrenclave"]
    assert quote.qe_report.mr_signer.hex() == case["qe_report_mrsigner"]
    assert quote.qe_report.isv_prod_id == case["qe_isvprodid"]
    if "tee_tcb_svn_2" in body:
        assert quote.body.tee_tcb_svn_2 is not None
        assert quote.body.tee_tcb_svn_2.hex() == body["tee_tcb_svn_2"]


def test_v4_full_collateral() -> None:
    verdict = verify_tdx(_quote(V4), _collateral(), at=TDX_V4_AT)
    # The sample platform's PCK SVNs are below both TCB levels of its TCB info.
    assert verdict.tcb_status == "TcbNotSupported"
    assert verdict.claims["qe_tcb_status"] == "UpToDate"
    assert any("not revoked" in c for c in verdict.checks)
    with pytest.raises(VerificationError) as info:
        ANY.check(verdict)
    assert info.value.code == "tcb_status_not_allowed"
    VerificationPolicy(allowed_tcb_statuses=frozenset({"TcbNotSupported"}),
                       allowed_measurements=frozenset({verdict.measurement})).check(verdict)


def test_v5_tcb_evaluation() -> None:
    quote = parse_tdx_quote(_quote(V5))
    pck = PckInfo(load_certificates(quote.pck_chain_pem, "pck")[0])
    info = json.loads(vector_path("tdx", "go-tdx-guest_tcbinfo_fmspc_90c06f000000.json")
                      .read_bytes())["tcbInfo"]
    body = quote.body
    assert level_status(info["tcbLevels"], pck.sgx_svns, pck.pce_svn, body.tee_tcb_svn) == "UpToDate"
    assert module_status(info, body.mr_signer_seam, body.seam_attributes,
                         body.tee_tcb_svn) == "UpToDate"
    older = bytes([2]) + body.tee_tcb_svn[1:]
    assert module_status(info, body.mr_signer_seam, body.seam_attributes, older) == "OutOfDate"


def _signed_end(quote: bytes) -> int:
    return len(parse_tdx_quote(quote).signed)


# Offsets into the v4 quote: header user data, MRTD (48+136), REPORT_DATA (48+520), signature.
@pytest.mark.parametrize("offset", [30, 48 + 136, 48 + 520, 632 + 4 + 5],
                         ids=["header", "mr_td", "report_data", "signature"])
def test_v4_bit_flip(offset: int) -> None:
    assert _code(flip(_quote(V4), offset), None, TDX_V4_AT) == "quote_signature_invalid"


def test_v5_bit_flip_in_body() -> None:
    quote = _quote(V5)
    assert _code(flip(quote, _signed_end(quote) - 10), None, TDX_V5_AT) == "quote_signature_invalid"


@pytest.mark.parametrize("qe_offset", [128 + 1, 320 + 1], ids=["qe_mrsigner", "qe_report_data"])
def test_qe_report_tamper(qe_offset: int) -> None:
    quote = _quote(V4)
    qe_start = 632 + 4 + 128 + 6
    assert _code(flip(quote, qe_start + qe_offset), None, TDX_V4_AT) == "qe_report_invalid"


def test_truncated_quote() -> None:
    assert _code(_quote(V4)[:700], None, TDX_V4_AT) == "quote_malformed"


def test_wrong_root() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain = forged_chain(["Intel SGX Root CA", "Intel SGX PCK Platform CA",
                          "Intel SGX PCK Certificate"], key)
    quote = with_pck_chain(_quote(V4), to_pem(chain))
    assert _code(quote, None, TDX_V4_AT) == "root_not_trusted"


def test_expired_collateral_without_pinned_time() -> None:
    assert _code(_quote(V4), _collateral(), None) == "collateral_expired"


def test_fmspc_mismatch() -> None:
    only_v5 = (vector_path("tdx", "go-tdx-guest_tcbinfo_fmspc_90c06f000000.json").read_bytes(),)
    assert _code(_quote(V4), _collateral(tcb_infos=only_v5), TDX_V4_AT) == "fmspc_mismatch"


def test_collateral_missing() -> None:
    assert _code(_quote(V4), _collateral(root_crl=None), TDX_V4_AT) == "collateral_missing"


def test_tampered_tcb_info() -> None:
    raw = vector_path("tdx", "go-tdx-guest_tcbinfo_fmspc_50806f000000.json").read_bytes()
    tampered = raw.replace(b'"OutOfDate"', b'"UpToDate"', 1)
    assert tampered != raw
    assert _code(_quote(V4), _collateral(tcb_infos=(tampered,)), TDX_V4_AT) == "collateral_invalid"


def test_missing_collateral_refused_by_default_policy() -> None:
    verdict = verify_tdx(_quote(V4), None, at=TDX_V4_AT)
    with pytest.raises(VerificationError) as info:
        ANY.check(verdict)
    assert info.value.code == "collateral_missing"
    VerificationPolicy(require_tcb_status=False, allow_any_measurement=True).check(verdict)


def test_pck_crl_must_come_from_the_pck_issuer() -> None:
    """The root CA's CRL in the PCK CRL slot says nothing about the PCK: refused, not skipped."""
    root_crl = vector_path("tdx", "go-tdx-guest_rootcrl.der").read_bytes()
    assert _code(_quote(V4), _collateral(pck_crl=root_crl), TDX_V4_AT) == "collateral_invalid"


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> TdxForge:
    return TdxForge(monkeypatch)


def _forged_code(forge: TdxForge, quote: bytes | None = None, **collateral: Any) -> str:
    return _code(quote or forge.quote(), forge.collateral(**collateral), TDX_V4_AT)


def test_forged_baseline_verifies(forge: TdxForge) -> None:
    verdict = verify_tdx(forge.quote(), forge.collateral(), at=TDX_V4_AT)
    assert verdict.tcb_status == "TcbNotSupported"


def _not_intels_qe(part: str) -> Callable[[bytearray], None]:
    """An edit of the QE report (SGX REPORTBODY): another signer, product or a debug enclave."""
    def edit(qe: bytearray) -> None:
        if part == "mrsigner":
            qe[128:160] = bytes(range(32))
        elif part == "isvprodid":
            qe[256:258] = (0x4242).to_bytes(2, "little")
        else:
            qe[48] |= 0x02  # ATTRIBUTES.FLAGS.DEBUG
    return edit


@pytest.mark.parametrize("part", ["mrsigner", "isvprodid", "debug"])
def test_a_quote_from_another_quoting_enclave_is_refused(forge: TdxForge, part: str) -> None:
    """The PCK certifies the report of any enclave the host launches with the provisioning key;
    only Intel's TD QE identity makes the attestation key Intel's, and the report of such an
    enclave could vouch for any TD. So it is checked with collateral or without."""
    signed = parse_tdx_quote(forge.original).signed
    assert verify_tdx(forge.resigned(signed), None, at=TDX_V4_AT).platform == "tdx"
    quote = forge.resigned(signed, _not_intels_qe(part))
    assert _code(quote, None, TDX_V4_AT) == "qe_identity_mismatch"
    assert _forged_code(forge, quote) == "qe_identity_mismatch"


def test_a_quote_naming_another_qe_vendor_is_refused(forge: TdxForge) -> None:
    """The header's QE vendor id (signed by the attestation key) must be Intel's."""
    signed = bytearray(parse_tdx_quote(forge.original).signed)
    assert bytes(signed[12:28]) == _tdx._INTEL_QE_VENDOR  # the real quote's
    signed[12:28] = bytes(range(16))
    quote = forge.resigned(bytes(signed))
    assert _code(quote, None, TDX_V4_AT) == "qe_identity_mismatch"
    assert _forged_code(forge, quote) == "qe_identity_mismatch"


def test_collateral_signer_must_be_intels_tcb_signing_certificate(forge: TdxForge) -> None:
    """An end-entity certificate the root issued under another name, whose key signed the TCB
    info and QE identity, is not Intel's word on TCB levels; the same key under the TCB
    Signing name is."""
    key = (TdxForge.ROOT, forge.keys["root"])
    other = issue("Intel SGX PCK Processor CA", forge.keys["tcb"], key, ca=False)
    assert _forged_code(forge, tcb_signing_chain=to_pem([other, forge.root])) == "collateral_invalid"
    same = issue("Intel SGX TCB Signing", forge.keys["tcb"], key, ca=False)
    verdict = verify_tdx(forge.quote(), forge.collateral(tcb_signing_chain=to_pem([same, forge.root]),
                                                         root_crl=forge.crl("root")), at=TDX_V4_AT)
    assert verdict.tcb_status == "TcbNotSupported"


def test_revoked_pck_not_hidden_by_root_crl(forge: TdxForge) -> None:
    revoking = forge.crl("pca", [forge.pck.serial_number])
    assert _forged_code(forge, pck_crl=revoking) == "crl_revoked"
    assert _forged_code(forge, pck_crl=forge.crl("root")) == "collateral_invalid"


def test_tcb_signing_cert_checked_against_root_crl(forge: TdxForge) -> None:
    revoking = forge.crl("root", [forge.tcbs.serial_number])
    assert _forged_code(forge, root_crl=revoking) == "crl_revoked"


def test_pck_cannot_issue_certificates(forge: TdxForge) -> None:
    """A PCK (cA false) signing a further 'PCK' whose key signs the QE report."""
    key = ec.generate_private_key(ec.SECP256R1())
    sub = issue("Intel SGX PCK Certificate (sub)", key,
                ("Intel SGX PCK Certificate", forge.keys["pck"]), [forge.sgx], ca=False)
    quote = forge.quote([sub, forge.pck, forge.pca, forge.root], qe_signer=key)
    assert _code(quote, None, TDX_V4_AT) == "cert_chain_invalid"
    assert _forged_code(forge, quote, pck_crl=forge.crl("pck")) == "cert_chain_invalid"


def _other_fmspc_tcb_info(forge: TdxForge) -> bytes:
    """The real TCB info moved to another FMSPC, every level lowered to 0 and UpToDate."""
    info = json.loads(forge.raw_body("tcbInfo", TCB_INFO_V4))
    info["fmspc"] = "00906ed50000"
    for level in info["tcbLevels"]:
        tcb = level["tcb"]
        for kind in ("sgxtcbcomponents", "tdxtcbcomponents"):
            tcb[kind] = [dict(c, svn=0) for c in tcb[kind]]
        tcb["pcesvn"], level["tcbStatus"] = 0, "UpToDate"
    return json.dumps(info, separators=(",", ":")).encode()


def test_tcb_info_duplicate_key_refused(forge: TdxForge) -> None:
    other = _other_fmspc_tcb_info(forge)
    assert _forged_code(forge, tcb_infos=(forge.signed_doc("tcbInfo", other),)) == "fmspc_mismatch"
    wrapped = forge.signed_doc("tcbInfo", other, extra=b',"tcbInfo":{"fmspc":"50806f000000"}')
    assert _forged_code(forge, tcb_infos=(wrapped,)) == "collateral_invalid"
    nested_dup = forge.signed_doc("tcbInfo", other.replace(b'"id":"TDX"', b'"id":"TDX","id":"X"'))
    assert _forged_code(forge, tcb_infos=(nested_dup,)) == "collateral_invalid"


def test_tcb_info_signed_member_must_be_top_level(forge: TdxForge) -> None:
    other = _other_fmspc_tcb_info(forge)
    signed = forge.signed_doc("tcbInfo", other)
    sig = json.loads(signed)["signature"].encode()
    doc = (b'{"x":{"tcbInfo":' + other + b'},"tcbInfo":{"fmspc":"50806f000000"},'
           b'"signature":"' + sig + b'"}')
    assert _forged_code(forge, tcb_infos=(doc,)) == "collateral_invalid"


def test_signed_tcb_info_fmspc_decides(forge: TdxForge, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if selection were fooled, the FMSPC inside the signed body is compared."""
    other = forge.signed_doc("tcbInfo", _other_fmspc_tcb_info(forge))
    monkeypatch.setattr(_tdx_collateral, "_select", lambda infos, fmspc: other)
    assert _forged_code(forge) == "fmspc_mismatch"


@pytest.mark.parametrize(("bit", "refused"), [(None, None), (0, "debug_enabled"),
                                              (29, "migration_agent_allowed")])
def test_td_attributes_debug_and_migratable(forge: TdxForge, bit: int | None,
                                            refused: str | None) -> None:
    """TDATTRIBUTES bit 29 (MIGRATABLE) is the TDX counterpart of SEV-SNP's MIGRATE_MA: the
    default policy refuses it, as it refuses DEBUG (bit 0)."""
    signed = bytearray(parse_tdx_quote(forge.original).signed)
    at = 48 + 120  # v4 header, then TD_ATTRIBUTES in the TD report body
    if bit is not None:
        value = int.from_bytes(signed[at:at + 8], "little") | (1 << bit)
        signed[at:at + 8] = value.to_bytes(8, "little")
    verdict = verify_tdx(forge.resigned(bytes(signed)), forge.collateral(), at=TDX_V4_AT)
    assert verdict.migration_agent == (bit == 29) and verdict.debug == (bit == 0)
    policy = VerificationPolicy(allow_any_measurement=True,
                                allowed_tcb_statuses=frozenset({"TcbNotSupported"}))
    if refused is None:
        policy.check(verdict)
        return
    with pytest.raises(VerificationError) as info:
        policy.check(verdict)
    assert info.value.code == refused


# -- TD 1.5: the TDX module the TD was launched under, and the one running now -------------------

@pytest.mark.parametrize(("launch", "current", "expected"), [
    ("OutOfDate", "UpToDate", "TDRelaunchAdvised"),
    ("OutOfDate", "SWHardeningNeeded", "TDRelaunchAdvised"),
    ("OutOfDate", "ConfigurationNeeded", "TDRelaunchAdvisedConfigurationNeeded"),
    ("OutOfDateConfigurationNeeded", "UpToDate", "TDRelaunchAdvisedConfigurationNeeded"),
    ("UpToDate", "UpToDate", "UpToDate"),
    ("OutOfDate", "OutOfDate", "OutOfDate"),
    ("UpToDate", "OutOfDate", "OutOfDate"),
    ("OutOfDate", "TcbNotSupported", "TcbNotSupported"),
    ("OutOfDate", "Revoked", "Revoked"),
    ("Revoked", "UpToDate", "Revoked"),
])
def test_relaunch_status(launch: str, current: str, expected: str) -> None:
    """Intel QVL checkForRelaunch: only an out-of-date launch under a current module now
    advises a relaunch; otherwise the worse status stands (a worse module now is not hidden)."""
    assert relaunch_status(launch, current) == expected


_MODULE_LEVELS = [{"tcb": {"isvsvn": 6}, "tcbDate": "2023-02-15T00:00:00Z", "tcbStatus": "UpToDate"},
                  {"tcb": {"isvsvn": 2}, "tcbDate": "2018-01-04T00:00:00Z", "tcbStatus": "OutOfDate"}]


def _module_tcb_info(forge: TdxForge) -> bytes:
    """The real TCB info with a TDX 1.5 module identity (TDX_01: SVN 6 current, 2 out of date),
    its platform levels lowered to the sample PCK's SVNs (UpToDate first)."""
    info = json.loads(forge.raw_body("tcbInfo", TCB_INFO_V4))
    for level in info["tcbLevels"]:
        tcb = level["tcb"]
        tcb["sgxtcbcomponents"] = [dict(c, svn=0) for c in tcb["sgxtcbcomponents"]]
        tcb["pcesvn"] = 0
    info["tdxModuleIdentities"] = [{"id": "TDX_01", "mrsigner": "00" * 48, "attributes": "00" * 8,
                                    "attributesMask": "FF" * 8, "tcbLevels": _MODULE_LEVELS}]
    return json.dumps(info, separators=(",", ":")).encode()


def _td15(forge: TdxForge, launch_svn: int, current_svn: int, current_major: int = 1) -> bytes:
    """The sample quote as a TD 1.5 quote (v5, body type 3), re-signed under the forge: module
    1.``launch_svn`` in TEE_TCB_SVN and ``current_major``.``current_svn`` in TEE_TCB_SVN_2
    (both with the level's late microcode SVN 5)."""
    signed = parse_tdx_quote(forge.original).signed
    launch = bytes([launch_svn, 1, 5]) + bytes(13)
    current = bytes([current_svn, current_major, 5]) + bytes(13)
    body = launch + signed[48 + 16:] + current + bytes(48)  # MRSERVICETD: none bound
    return forge.resigned(struct.pack("<H", 5) + signed[2:48] + struct.pack("<HI", 3, len(body)) + body)


@pytest.mark.parametrize(("launch_svn", "current_svn", "status", "launch", "current"), [
    (4, 6, "TDRelaunchAdvised", "OutOfDate", "UpToDate"),
    (6, 6, "UpToDate", "UpToDate", "UpToDate"),
    (4, 4, "OutOfDate", "OutOfDate", "OutOfDate"),
    (6, 4, "OutOfDate", "UpToDate", "OutOfDate"),
], ids=["relaunch_advised", "current", "out_of_date", "worse_now"])
def test_td15_status_judges_both_modules(forge: TdxForge, launch_svn: int, current_svn: int,
                                         status: str, launch: str, current: str) -> None:
    quote = _td15(forge, launch_svn, current_svn)
    collateral = forge.collateral(tcb_infos=(forge.signed_doc("tcbInfo", _module_tcb_info(forge)),))
    verdict = verify_tdx(quote, collateral, at=TDX_V4_AT)
    assert verdict.claims["version"] == 5
    assert verdict.claims["tee_tcb_svn_2"] == bytes([current_svn, 1, 5]).hex() + "00" * 13
    assert (verdict.tcb_status, verdict.claims["launch_tcb_status"],
            verdict.claims["current_tcb_status"]) == (status, launch, current)
    assert any("TEE_TCB_SVN_2" in check for check in verdict.checks)
    policy = VerificationPolicy(allowed_measurements=frozenset({verdict.measurement}))
    if status == "UpToDate":
        policy.check(verdict)
        return
    # Not accepted by default: the TD ran under an out-of-date module (relaunch it), or runs one.
    with pytest.raises(VerificationError) as info:
        policy.check(verdict)
    assert info.value.code == "tcb_status_not_allowed"
    if status == "TDRelaunchAdvised":
        VerificationPolicy(allowed_measurements=frozenset({verdict.measurement}),
                           allowed_tcb_statuses=frozenset({status})).check(verdict)


def test_td15_unknown_module_now_is_refused(forge: TdxForge) -> None:
    """TEE_TCB_SVN_2 naming a TDX module major version the TCB info has no identity for."""
    collateral = forge.collateral(tcb_infos=(forge.signed_doc("tcbInfo", _module_tcb_info(forge)),))
    assert _code(_td15(forge, 6, 6, current_major=2), collateral, TDX_V4_AT) == "tcb_mismatch"
