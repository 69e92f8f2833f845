"""NVIDIA Hopper SPDM measurement report: verification, claims, mutations."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.attestation import VerificationError, gpu_nonce, verify_nvidia
from proxy.attestation._nvidia import SIGNATURE_SIZE, parse_spdm
from proxy.attestation._x509 import load_certificates
from tests.attestation._support import flip, pem
from tests.conftest import load_vector, vector_path


def _manifest() -> Any:
    return load_vector("nvidia-gpu", "manifest.json")


def _report() -> bytes:
    return bytes.fromhex(vector_path("nvidia-gpu", _manifest()["report"]).read_text().strip())


def _chain() -> bytes:
    return vector_path("nvidia-gpu", _manifest()["cert_chain"]).read_bytes()


def _code(report: bytes, chain: bytes, nonce: bytes | None = None) -> str:
    with pytest.raises(VerificationError) as info:
        verify_nvidia(report, chain, expected_nonce=nonce)
    return info.value.code


def test_vector_report_verifies() -> None:
    manifest = _manifest()
    nonce = bytes.fromhex(manifest["request_nonce"])
    verdict = verify_nvidia(_report(), _chain(), expected_nonce=nonce)
    assert verdict.report_data == nonce
    assert verdict.claims["driver_version"] == manifest["opaque_data"]["driver_version"]
    assert verdict.claims["vbios_version"] == manifest["opaque_data"]["vbios_version_decoded"]
    assert verdict.claims["project"] == manifest["opaque_data"]["project"]
    assert verdict.claims["chip_sku"] == manifest["opaque_data"]["chip_sku"]
    blocks = verdict.claims["measurements"]
    assert len(blocks) == manifest["n_measurement_blocks"]
    for block in manifest["measurement_blocks"]:
        assert blocks[block["index"]] == block["value_hex"]


def test_parse_nonces() -> None:
    manifest = _manifest()
    parsed = parse_spdm(_report())
    assert parsed.responder_nonce.hex() == manifest["responder_nonce"]
    assert len(_report()) == manifest["report_bytes"]


@pytest.mark.parametrize("offset", [10, 37 + 20, -SIGNATURE_SIZE + 3, -SIGNATURE_SIZE - 5],
                         ids=["request_nonce", "measurement", "signature", "opaque"])
def test_bit_flip(offset: int) -> None:
    report = _report()
    assert _code(flip(report, offset % len(report)), _chain()) == "report_signature_invalid"


def test_nonce_binding() -> None:
    assert _code(_report(), _chain(), gpu_nonce(bytes(64))) == "gpu_nonce_mismatch"


def test_leaf_only_is_untrusted() -> None:
    leaf = pem(_chain()).split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    assert len(load_certificates(leaf, "leaf")) == 1
    assert _code(_report(), leaf) == "root_not_trusted"


def test_wrong_key() -> None:
    rim_root = vector_path("nvidia-gpu", "nvtrust_verifier_RIM_root.pem").read_bytes()
    assert _code(_report(), rim_root) == "report_signature_invalid"


def test_truncated() -> None:
    assert _code(_report()[:-1], _chain()) == "report_malformed"
