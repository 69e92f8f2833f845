"""Shared helpers for the attestation tests: vector access and forged-certificate builders."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.attestation._x509 import load_certificates
from tests.conftest import load_vector, vector_path

SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TDX_V4_AT = dt.datetime(2023, 6, 20, tzinfo=dt.UTC)
TDX_V5_AT = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)


def vector_cases(folder: str, key: str, id_key: str) -> list[Any]:
    """One pytest param per manifest entry; a single placeholder when vectors are absent."""
    try:
        data = load_vector(folder, "manifest.json")
    except pytest.skip.Exception:
        return [pytest.param(None, id="vectors-missing")]
    return [pytest.param(case, id=case[id_key]) for case in data[key]]


def need_case(case: Any, folder: str) -> dict[str, Any]:
    """Skip (or fail under SEALGATE_REQUIRE_ALL) for the placeholder case."""
    if case is None:
        load_vector(folder, "manifest.json")
    assert isinstance(case, dict)
    return case


def snp_case(report: str) -> dict[str, Any]:
    cases = load_vector("sev-snp", "manifest.json")["reports"]
    return next(c for c in cases if c["report"] == report)


def snp_report(case: dict[str, Any]) -> bytes:
    return vector_path("sev-snp", case["report"]).read_bytes()


def pem(data: bytes) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM)
                    for c in load_certificates(data, "test"))


def snp_certs(case: dict[str, Any], leaf: str | None = None) -> bytes:
    leaf_bytes = vector_path("sev-snp", leaf or case["signing_cert"]).read_bytes()
    return pem(leaf_bytes) + vector_path("sev-snp", case["cert_chain"]).read_bytes()


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    extensions: list[x509.Extension[Any]] | None = None,
    ca: bool = True,
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer`` (self-signed when None), valid 2000-2099."""
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for ext in extensions or []:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(issuer_key, hashes.SHA384())


def forged_chain(names: list[str], leaf_key: ec.EllipticCurvePrivateKey,
                 leaf_extensions: list[x509.Extension[Any]] | None = None) -> list[x509.Certificate]:
    """Root-first names → [leaf, ..., self-signed root], all under keys made here."""
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in names[:-1]] + [leaf_key]
    certs = [issue(names[0], keys[0])]
    for i in range(1, len(names)):
        last = i == len(names) - 1
        exts = leaf_extensions if last else None
        certs.append(issue(names[i], keys[i], (names[i - 1], keys[i - 1]), exts, ca=not last))
    return certs[::-1]


def to_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
