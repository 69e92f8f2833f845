"""Receipts and their header form."""

from __future__ import annotations

import base64

import pytest

from audit import Receipt, VerificationError

SIG = base64.b64encode(bytes(range(64))).decode()


def test_header_roundtrip() -> None:
    receipt = Receipt("0123456789abcdef0123456789abcdef", 42, SIG, "0a1b2c3d")
    header = receipt.to_header()
    assert header == f"id=0123456789abcdef0123456789abcdef; leaf=42; log=0a1b2c3d; sig={SIG}"
    assert Receipt.parse(header) == receipt


@pytest.mark.parametrize(
    "header",
    [
        "",
        "id=0123456789abcdef0123456789abcdef; leaf=42; log=0a1b2c3d",
        f"id=0123456789abcdef0123456789abcdef; leaf=-1; log=0a1b2c3d; sig={SIG}",
        f"id=0123456789abcdef0123456789abcdef; leaf=01; log=0a1b2c3d; sig={SIG}",
        f"id=XYZ; leaf=1; log=0a1b2c3d; sig={SIG}",
        f"id=0123456789abcdef0123456789abcdef; leaf=1; log=0a1b2c3d; sig={SIG[:-8]}",
        f"id=0123456789abcdef0123456789abcdef; leaf=1; leaf=2; log=0a1b2c3d; sig={SIG}",
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(VerificationError):
        Receipt.parse(header)
