"""What a platform verifier returns once the evidence has checked out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvidenceVerdict", "Trace"]

Trace = list[str]
"""Names of the checks that passed, in order; verifiers append to it as they go."""


@dataclass(frozen=True)
class EvidenceVerdict:
    """Verified facts from one piece of platform evidence (before policy is applied)."""

    platform: str
    """``sev-snp``, ``tdx``, ``nvidia`` or ``simulated``."""
    report_data: bytes
    """The 64-byte REPORT_DATA (SNP/TDX/simulated) or the 32-byte SPDM request nonce (GPU)."""
    measurement: str
    """Launch measurement, lower-case hex (SNP MEASUREMENT, TDX MRTD)."""
    debug: bool
    """Whether the guest/TD can be debugged by the host."""
    simulated: bool = False
    """True for the insecure development provider."""
    migration_agent: bool = False
    """SEV-SNP guest policy MIGRATE_MA: a migration agent may read and export guest memory."""
    tcb: Mapping[str, int] = field(default_factory=dict)
    """Named TCB component versions, for ``VerificationPolicy.min_tcb``."""
    tcb_status: str | None = None
    """Vendor TCB status (TDX: ``UpToDate``, ``OutOfDate``, ...), None where not evaluated."""
    claims: Mapping[str, Any] = field(default_factory=dict)
    """Other parsed fields worth showing (hex strings and ints)."""
    checks: tuple[str, ...] = ()
    """The checks that passed."""
