"""VerificationPolicy named constructors: files, signed release manifests, environment."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proxy.attestation import VerificationError, VerificationPolicy

M1, M2 = "aa" * 48, "bb" * 48


def _signed_manifest(tmp_path: Path, key: Ed25519PrivateKey, tamper: bool = False) -> Path:
    manifest = json.dumps({"release": "1.0.0", "measurements": [{"measurement": M2}]}).encode()
    (tmp_path / "release.json").write_bytes(manifest + (b" " if tamper else b""))
    (tmp_path / "release.json.sig").write_bytes(base64.b64encode(key.sign(manifest)))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    policy = {"allowed_measurements": [M1], "release_manifest": {
        "path": "release.json", "signature": "release.json.sig",
        "publisher_key": base64.b64encode(public).decode()}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return path


def test_json_policy_with_signed_manifest(tmp_path: Path) -> None:
    policy = VerificationPolicy.from_file(_signed_manifest(tmp_path, Ed25519PrivateKey.generate()))
    assert policy.allowed_measurements == {M1, M2}
    assert not policy.allow_simulated and not policy.allow_debug


def test_tampered_manifest(tmp_path: Path) -> None:
    path = _signed_manifest(tmp_path, Ed25519PrivateKey.generate(), tamper=True)
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_file(path)
    assert info.value.code == "manifest_signature_invalid"


def test_toml_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(f'allowed_measurements = ["{M1.upper()}"]\nallowed_platforms = ["tdx"]\n'
                    'allow_debug = true\nmax_age_s = 30\n'
                    'allowed_tcb_statuses = ["UpToDate"]\n[min_tcb.sev-snp]\nsnp = 8\n')
    policy = VerificationPolicy.from_file(path)
    assert policy.allowed_measurements == {M1} and policy.allowed_platforms == {"tdx"}
    assert policy.allow_debug and policy.max_age_s == 30
    assert policy.min_tcb["sev-snp"]["snp"] == 8
    assert policy.allowed_tcb_statuses == {"UpToDate"}
    assert not policy.allow_any_measurement and not policy.allow_migration_agent


def test_flags_from_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("allow_any_measurement = true\nallow_migration_agent = true\n"
                    "require_tcb_status = false\n")
    policy = VerificationPolicy.from_file(path)
    assert policy.allow_any_measurement and policy.allow_migration_agent
    assert not policy.require_tcb_status


@pytest.mark.parametrize("flag", ["allow_debug", "allow_simulated", "allow_any_measurement",
                                  "allow_migration_agent", "require_tcb_status"])
@pytest.mark.parametrize("value", ["false", "no", 1])
def test_flags_must_be_booleans(tmp_path: Path, flag: str, value: object) -> None:
    """bool("false") is True: string or number flags are refused, not coerced."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({flag: value}))
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_file(path)
    assert info.value.code == "policy_invalid"


@pytest.mark.parametrize("text", ["{", '{"min_tcb": {"sev-snp": {"snp": "x"}}}', "[]"])
def test_invalid_policy(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_file(path)
    assert info.value.code == "policy_invalid"


@pytest.mark.parametrize(("doc", "named"), [
    ({"max_age": 1}, "'max_age'"),  # max_age_s misspelt: evidence of any age would pass
    ({"allowed_platform": ["tdx"]}, "'allowed_platform'"),
    ({"min_tcb": {"sev_snp": {"snp": 99}}}, "'sev_snp'"),  # the minimum would apply to nothing
    ({"allowed_platforms": ["tdx", "SEV-SNP"]}, "'SEV-SNP'"),
])
def test_a_misspelt_key_or_platform_is_refused_not_ignored(tmp_path: Path, doc: dict[str, Any],
                                                           named: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"allow_simulated": True, **doc}))
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_file(path)
    assert info.value.code == "policy_invalid" and named in info.value.detail


def test_an_unreadable_policy_names_the_file_and_why(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_file(tmp_path / "absent.toml")
    assert str(tmp_path / "absent.toml") in info.value.detail and "No such file" in info.value.detail
    broken = tmp_path / "p.toml"
    broken.write_text("max_age_s = \n")
    with pytest.raises(VerificationError) as info:
        VerificationPolicy.from_file(broken)
    assert "is not TOML" in info.value.detail and "line 1" in info.value.detail


def test_from_env(tmp_path: Path) -> None:
    assert not VerificationPolicy.from_env({}).allow_simulated
    assert VerificationPolicy.from_env({"SEALGATE_ALLOW_SIMULATED": "1"}).allow_simulated
    assert not VerificationPolicy.from_env({"SEALGATE_ALLOW_SIMULATED": "0"}).allow_simulated
    env = {"SEALGATE_ALLOWED_MEASUREMENTS": f"{M1}, {M2}"}
    assert VerificationPolicy.from_env(env).allowed_measurements == {M1, M2}
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"allowed_measurements": [M1], "allow_simulated": True}))
    policy = VerificationPolicy.from_env({"SEALGATE_VERIFY_POLICY": str(path),
                                          "SEALGATE_ALLOW_SIMULATED": "false"})
    assert policy.allowed_measurements == {M1} and not policy.allow_simulated
    assert not VerificationPolicy.from_env({}).allow_any_measurement
    assert VerificationPolicy.from_env({"SEALGATE_ALLOW_ANY_MEASUREMENT": "1"}).allow_any_measurement


def test_error_shape() -> None:
    err = VerificationError("debug_enabled", "the guest policy allows debugging")
    assert str(err) == "debug_enabled: the guest policy allows debugging"
    assert err.code == "debug_enabled"
