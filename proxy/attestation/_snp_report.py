"""SEV-SNP ATTESTATION_REPORT layout (AMD SEV-SNP ABI spec 56860, Table 22; 1184 bytes).

Fields are little-endian. Versions 2 and 3 share the layout; version 3 adds the CPUID
family/model/stepping bytes at 0x188. The signature at 0x2A0 covers bytes [0x000, 0x2A0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._errors import VerificationError

__all__ = ["REPORT_SIZE", "SIGNED_SIZE", "SnpReport", "decode_tcb", "parse_snp_report"]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = frozenset({2, 3, 4, 5})
POLICY_MIGRATE_MA_BIT = 18  # ABI spec Table 9: GUEST_POLICY bit 18 = MIGRATE_MA allowed
POLICY_DEBUG_BIT = 19  # ABI spec Table 9: GUEST_POLICY bit 19 = DEBUG allowed

# TCB_VERSION byte positions (ABI spec §2.2): Milan and Genoa put bootloader, tee, snp and
# microcode at bytes 0, 1, 6, 7; Turin adds FMC at byte 0 and shifts the others.
_TCB_LAYOUTS: dict[str, dict[str, int]] = {
    "Milan": {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7},
    "Genoa": {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7},
    "Turin": {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7},
}


def decode_tcb(raw: int, product: str) -> dict[str, int]:
    """Split a 64-bit TCB_VERSION into named SVNs using the product's layout."""
    layout = _TCB_LAYOUTS.get(product)
    if layout is None:
        raise VerificationError("report_malformed", f"unknown SEV-SNP product {product!r}")
    data = raw.to_bytes(8, "little")
    return {name: data[pos] for name, pos in layout.items()}


@dataclass(frozen=True)
class SnpReport:
    """Every field of the attestation report (byte strings as in the report)."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_mod_step: bytes
    chip_id: bytes
    committed_tcb: int
    current_version: str
    committed_version: str
    launch_tcb: int
    signature_r: bytes
    signature_s: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)

    @property
    def migrate_ma(self) -> bool:
        """A migration agent may be bound to the guest (and can export its memory)."""
        return bool(self.policy >> POLICY_MIGRATE_MA_BIT & 1)

    @property
    def signing_key(self) -> str:
        """SIGNER_INFO bits 4:2 (ABI spec Table 23): which key signed the report."""
        return {0: "vcek", 1: "vlek", 7: "none"}.get(self.signer_info >> 2 & 7, "reserved")

    @property
    def mask_chip_id(self) -> bool:
        return bool(self.signer_info >> 1 & 1)


def _version(raw: bytes, at: int) -> str:
    build, minor, major = raw[at], raw[at + 1], raw[at + 2]
    return f"{major}.{minor}.{build}"


def parse_snp_report(raw: bytes) -> SnpReport:
    """Parse a 1184-byte report; ``report_malformed`` on wrong size or version."""
    if len(raw) != REPORT_SIZE:
        raise VerificationError("report_malformed", f"SEV-SNP report is {len(raw)} bytes")
    version, guest_svn, policy = struct.unpack_from("<IIQ", raw, 0x00)
    if version not in SUPPORTED_VERSIONS:
        raise VerificationError("report_malformed", f"unsupported report version {version}")
    vmpl, sig_algo, current_tcb, platform_info, signer_info = struct.unpack_from(
        "<IIQQI", raw, 0x30
    )
    (reported_tcb,) = struct.unpack_from("<Q", raw, 0x180)
    (committed_tcb,) = struct.unpack_from("<Q", raw, 0x1E0)
    (launch_tcb,) = struct.unpack_from("<Q", raw, 0x1F0)
    return SnpReport(
        raw=bytes(raw), version=version, guest_svn=guest_svn, policy=policy,
        family_id=raw[0x10:0x20], image_id=raw[0x20:0x30], vmpl=vmpl,
        signature_algo=sig_algo, current_tcb=current_tcb, platform_info=platform_info,
        signer_info=signer_info, report_data=raw[0x50:0x90], measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0], id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140], report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180], reported_tcb=reported_tcb,
        cpuid_fam_mod_step=raw[0x188:0x18B], chip_id=raw[0x1A0:0x1E0],
        committed_tcb=committed_tcb, current_version=_version(raw, 0x1E8),
        committed_version=_version(raw, 0x1EC), launch_tcb=launch_tcb,
        signature_r=raw[0x2A0:0x2E8], signature_s=raw[0x2E8:0x330],
    )
