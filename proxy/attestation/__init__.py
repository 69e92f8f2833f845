"""Enclave identity: attestation evidence, its verification, and key binding.

Verifiers (SEV-SNP, TDX, NVIDIA Hopper) run offline against pinned vendor roots shipped in
``roots/``; collateral is passed in. Providers collect evidence inside the enclave
(configfs-tsm, ``/dev/sev-guest``, a pluggable GPU collector, or the insecure simulator).
`IdentityService` binds the OHTTP key configs, audit key, policy digest and release
measurement into REPORT_DATA; `verify_identity` checks all of it on the client side.
"""

from ._binding import compute_report_data
from ._collateral import Collateral, load_collateral
from ._configfs import ConfigfsIO, ConfigfsTsmProvider
from ._errors import VerificationError
from ._evidence import Evidence, EvidenceProvider
from ._identity import IdentityService
from ._nvidia import gpu_nonce, verify_nvidia
from ._policy import VerificationPolicy
from ._providers import GpuCollector, NvidiaGpuProvider, SevGuestProvider, detect_provider
from ._routes import identity_handlers
from ._simulated import SimulatedProvider
from ._snp import verify_sev_snp
from ._tdx import verify_tdx
from ._verdict import EvidenceVerdict
from ._verify import VerifiedIdentity, verify_evidence, verify_identity

__all__ = [
    "Collateral",
    "ConfigfsIO",
    "ConfigfsTsmProvider",
    "Evidence",
    "EvidenceProvider",
    "EvidenceVerdict",
    "GpuCollector",
    "IdentityService",
    "NvidiaGpuProvider",
    "SevGuestProvider",
    "SimulatedProvider",
    "VerificationError",
    "VerificationPolicy",
    "VerifiedIdentity",
    "compute_report_data",
    "detect_provider",
    "gpu_nonce",
    "identity_handlers",
    "load_collateral",
    "verify_evidence",
    "verify_identity",
    "verify_nvidia",
    "verify_sev_snp",
    "verify_tdx",
]
