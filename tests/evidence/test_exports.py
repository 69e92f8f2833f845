"""Public surfaces of the evidence, dashboard and users packages are exactly these."""

from __future__ import annotations

import proxy.dashboard
import proxy.evidence
import proxy.users


def test_evidence_all_is_exact() -> None:
    assert sorted(proxy.evidence.__all__) == sorted([
        "BundleInvalid", "BundleVerdict", "Check", "EvidenceError", "ExportFailed",
        "ExportOptions", "build_bundle", "identity_documents", "persist_identity", "write_bundle",
        "policy_snapshots", "record_startup_state", "snapshot_policy", "verify_bundle"])
    assert all(hasattr(proxy.evidence, n) for n in proxy.evidence.__all__)


def test_dashboard_and_users_all_are_exact() -> None:
    assert sorted(proxy.dashboard.__all__) == ["DashboardService", "dashboard_router"]
    assert sorted(proxy.users.__all__) == sorted([
        "ROLES", "InvalidCredentials", "User", "UserError", "UserStore", "hash_password",
        "verify_password"])


def test_errors_have_one_root_and_string_codes() -> None:
    from proxy.evidence import BundleInvalid, EvidenceError, ExportFailed
    from proxy.users import InvalidCredentials, UserError

    assert issubclass(BundleInvalid, EvidenceError) and issubclass(ExportFailed, EvidenceError)
    assert str(ExportFailed("no log")) == "export_failed: no log"
    assert issubclass(InvalidCredentials, UserError)
    assert str(InvalidCredentials("x")) == "invalid_credentials: x"
