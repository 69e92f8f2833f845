"""TDX TCB info v3 and QE identity v2 evaluation (Intel PCS API v4; Intel DCAP QVL rules).

Both documents are ``{"<name>": {...}, "signature": hex(r‖s)}``; the ECDSA-P256 signature
covers the exact bytes of the ``<name>`` JSON value as served, so those bytes are kept raw.
Duplicate keys are refused at every depth: a signed body must parse to one meaning only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._errors import VerificationError, translate
from ._x509 import check_window

__all__ = [
    "NOT_SUPPORTED", "SignedJson", "combine_status", "level_status", "load_signed",
    "loads_strict", "module_status", "qe_status", "relaunch_status",
]

NOT_SUPPORTED = "TcbNotSupported"
"""No TCB level matches (Intel QVL ``STATUS_TCB_NOT_SUPPORTED``); no default policy accepts it."""

RELAUNCH_ADVISED = "TDRelaunchAdvised"
RELAUNCH_ADVISED_CONFIGURATION = "TDRelaunchAdvisedConfigurationNeeded"

# Worse statuses rank higher; the overall status is the worst of platform, module and QE.
_RANK = {
    "UpToDate": 0, "SWHardeningNeeded": 1, "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3, RELAUNCH_ADVISED: 4,
    RELAUNCH_ADVISED_CONFIGURATION: 5, "OutOfDate": 6, "OutOfDateConfigurationNeeded": 7,
    NOT_SUPPORTED: 8, "Revoked": 9,
}
_OUT_OF_DATE = frozenset({"OutOfDate", "OutOfDateConfigurationNeeded"})
_CURRENT = frozenset({"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                      "ConfigurationAndSWHardeningNeeded"})


@dataclass(frozen=True)
class SignedJson:
    body: Mapping[str, Any]
    raw: bytes


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise VerificationError("collateral_invalid", "duplicate key in a PCS document")
    return out


_STRICT = json.JSONDecoder(object_pairs_hook=_unique)


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses duplicate object keys (``collateral_invalid``)."""
    return _STRICT.decode(text)


def _raw_member(text: str, name: str) -> tuple[Any, bytes]:
    key = f'"{name}"'
    start = text.index(key) + len(key)
    start = text.index(":", start) + 1
    while text[start] in " \t\r\n":
        start += 1
    value, end = _STRICT.raw_decode(text, start)
    return value, text[start:end].encode()


def load_signed(
    data: bytes, name: str, signer: x509.Certificate, when: datetime
) -> SignedJson:
    """Parse a PCS document, verify its signature by ``signer`` and its validity window."""
    with translate("collateral_invalid", f"{name} document"):
        text = data.decode()
        doc = loads_strict(text)
        body, raw = _raw_member(text, name)
        # The raw bytes found must be the document's one top-level member, nothing nested.
        if not isinstance(doc, dict) or set(doc) != {name, "signature"} or doc[name] != body:
            raise VerificationError("collateral_invalid", f"{name}: unexpected document shape")
        signature = bytes.fromhex(doc["signature"])
        issue = datetime.fromisoformat(body["issueDate"])
        next_update = datetime.fromisoformat(body["nextUpdate"])
        if issue.tzinfo is None or next_update.tzinfo is None:  # PCS dates are UTC ("Z")
            raise VerificationError("collateral_invalid", f"{name}: dates without a time zone")
    key = signer.public_key()
    if len(signature) != 64 or not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("collateral_invalid", f"{name}: unsupported signature")
    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    try:
        key.verify(der, raw, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VerificationError("collateral_invalid", f"{name}: signature does not verify") from exc
    check_window(issue, next_update, when, name)
    return SignedJson(body, raw)


def _svns(components: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(c["svn"]) for c in components]


def level_status(
    levels: Sequence[Mapping[str, Any]],
    sgx: Sequence[int],
    pce_svn: int,
    tee_tcb_svn: bytes,
) -> str:
    """Status of the first TCB level the platform meets (QVL ``getMatchingTcbLevel``)."""
    # TDX 1.5+: when TEE_TCB_SVN[1] (module major version) is set, bytes 0-1 are judged by
    # the TDX module identity instead of the TCB levels.
    skip = 2 if tee_tcb_svn[1] > 0 else 0
    for level in levels:
        tcb = level["tcb"]
        if any(a < b for a, b in zip(sgx, _svns(tcb["sgxtcbcomponents"]), strict=True)):
            continue
        if pce_svn < int(tcb["pcesvn"]):
            continue
        tdx = _svns(tcb["tdxtcbcomponents"])
        if any(tee_tcb_svn[i] < tdx[i] for i in range(skip, 16)):
            continue
        return str(level["tcbStatus"])
    return NOT_SUPPORTED


def _masked_equal(actual: bytes, expected_hex: str, mask_hex: str) -> bool:
    expected, mask = bytes.fromhex(expected_hex), bytes.fromhex(mask_hex)
    if len(expected) != len(actual) or len(mask) != len(actual):
        return False
    return all(a & m == e & m for a, e, m in zip(actual, expected, mask, strict=True))


def module_status(info: Mapping[str, Any], mr_signer_seam: bytes, attrs: bytes,
                  tee_tcb_svn: bytes) -> str | None:
    """TDX module checks (tdxModule, tdxModuleIdentities); returns the module's status."""
    module = info.get("tdxModule")
    if module is not None and (
        bytes.fromhex(module["mrsigner"]) != mr_signer_seam
        or not _masked_equal(attrs, module["attributes"], module["attributesMask"])
    ):
        raise VerificationError("tcb_mismatch", "TDX module signer/attributes differ")
    if tee_tcb_svn[1] == 0:
        return None
    wanted = f"TDX_{tee_tcb_svn[1]:02X}"
    ident = next((m for m in info.get("tdxModuleIdentities", []) if m["id"] == wanted), None)
    if ident is None:
        raise VerificationError("tcb_mismatch", f"no TDX module identity {wanted}")
    for level in ident["tcbLevels"]:
        if tee_tcb_svn[0] >= int(level["tcb"]["isvsvn"]):
            return str(level["tcbStatus"])
    return NOT_SUPPORTED


def qe_status(identity: Mapping[str, Any], misc_select: int, attributes: bytes,
              mr_signer: bytes, isv_prod_id: int, isv_svn: int) -> str:
    """Check the QE report against the QE identity; return the QE's TCB status."""
    with translate("collateral_invalid", "QE identity"):
        ok = (
            identity["id"] == "TD_QE"
            and bytes.fromhex(identity["mrsigner"]) == mr_signer
            and int(identity["isvprodid"]) == isv_prod_id
            and misc_select & int(identity["miscselectMask"], 16)
            == int(identity["miscselect"], 16) & int(identity["miscselectMask"], 16)
            and _masked_equal(attributes, identity["attributes"], identity["attributesMask"])
        )
        levels = identity["tcbLevels"]
    if not ok:
        raise VerificationError("qe_identity_mismatch", "QE report does not match the QE identity")
    for level in levels:
        if isv_svn >= int(level["tcb"]["isvsvn"]):
            return str(level["tcbStatus"])
    return NOT_SUPPORTED


def combine_status(*statuses: str | None) -> str:
    """The worst of the given statuses (unknown statuses rank just below ``Revoked``)."""
    present = [s for s in statuses if s is not None]
    return max(present, key=lambda s: _RANK.get(s, 8))


def relaunch_status(launch: str, current: str) -> str:
    """The status of a TD 1.5 quote (Intel QVL ``checkForRelaunch``) from ``launch``, the
    status under TEE_TCB_SVN (the TDX module the TD was launched under), and ``current``, under
    TEE_TCB_SVN_2 (the module running now, after TD-preserving updates).

    A TD launched under an out-of-date module that now runs a current one is
    ``TDRelaunchAdvised`` (``…ConfigurationNeeded`` when either status asks for configuration):
    relaunched, it would be current. Otherwise the worse of the two, so a module running now
    that rates worse than the one the TD was launched under is never hidden."""
    if launch in _OUT_OF_DATE and current in _CURRENT:
        configuration = "Configuration" in launch or "Configuration" in current
        return RELAUNCH_ADVISED_CONFIGURATION if configuration else RELAUNCH_ADVISED
    return combine_status(launch, current)
