"""The public surface of proxy.attestation is exactly this."""

import proxy.attestation


def test_all_is_exact() -> None:
    assert sorted(proxy.attestation.__all__) == [
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
    for name in proxy.attestation.__all__:
        assert getattr(proxy.attestation, name) is not None
