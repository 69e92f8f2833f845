"""Certificates, pinned roots, chains, CRLs and validity windows (RFC 5280 §6, simplified).

Chains here are short, vendor-defined and pinned: each certificate must be signed by the next,
the last must be (or be signed by) a pinned root, and every certificate must be inside its
validity window at the verification time. Every certificate that issues another must be a CA
(basicConstraints, keyUsage keyCertSign when present, pathLenConstraint: RFC 5280 §6.1.4 (k)-(n));
the leaf must not be one.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from ._errors import VerificationError

_E = TypeVar("_E", bound=x509.ExtensionType)

__all__ = [
    "build_chain",
    "check_crl",
    "check_window",
    "load_certificate",
    "load_certificates",
    "pinned_root",
    "resolve_time",
    "verify_chain",
]


def resolve_time(at: datetime | None) -> datetime:
    """The verification time: the pinned ``at`` (naive means UTC) or the current time."""
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Load one DER certificate or a PEM bundle (AMD certificates may carry serial 0)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if b"-----BEGIN" in data:
                return x509.load_pem_x509_certificates(data)
            return [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion) as exc:
        raise VerificationError("cert_chain_invalid", f"{what}: not a certificate") from exc


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """Load exactly one certificate."""
    certs = load_certificates(data, what)
    if len(certs) != 1:
        raise VerificationError("cert_chain_invalid", f"{what}: expected one certificate")
    return certs[0]


@cache
def pinned_root(name: str) -> x509.Certificate:
    """A root certificate shipped in ``proxy/attestation/roots/`` (package data)."""
    data = resources.files(__package__).joinpath("roots").joinpath(f"{name}.pem").read_bytes()
    return load_certificate(data, name)


def check_window(
    not_before: datetime, not_after: datetime | None, when: datetime, what: str
) -> None:
    """``collateral_expired`` unless ``not_before <= when <= not_after``."""
    if when < not_before:
        raise VerificationError("collateral_expired", f"{what} is not valid before {not_before}")
    if not_after is not None and when > not_after:
        raise VerificationError("collateral_expired", f"{what} expired at {not_after}")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError) as exc:
        detail = f"{what}: {_name(cert)} is not signed by its issuer"
        raise VerificationError("cert_chain_invalid", detail) from exc


def _name(cert: x509.Certificate) -> str:
    """The certificate's subject for an error message; a malformed one is only named so."""
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "a certificate with a malformed subject"


def build_chain(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate], limit: int = 8
) -> list[x509.Certificate]:
    """Order certificates from ``pool`` into a chain above ``leaf`` by issuer name+signature."""
    chain = [leaf]
    while len(chain) < limit and chain[-1].issuer != chain[-1].subject:
        current = chain[-1]
        issuer = next((c for c in pool if c.subject == current.issuer and c not in chain
                       and _issued(current, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:
        name = _name(cert)
        raise VerificationError("cert_chain_invalid", f"{name}: malformed extensions") from exc


def _constraints(cert: x509.Certificate) -> tuple[bool, int | None]:
    """``(cA, pathLenConstraint)``; no basicConstraints means not a CA (RFC 5280 §4.2.1.9)."""
    value = _extension(cert, x509.BasicConstraints)
    return (False, None) if value is None else (value.ca, value.path_length)


def _is_ca(cert: x509.Certificate, usage: str) -> bool:
    """A CA whose keyUsage, when present, has ``usage`` (``key_cert_sign``, ``crl_sign``)."""
    key_usage = _extension(cert, x509.KeyUsage)
    return _constraints(cert)[0] and (key_usage is None or bool(getattr(key_usage, usage)))


def _check_ca_path(path: Sequence[x509.Certificate], what: str) -> None:
    """``path`` is leaf first, root last; RFC 5280 §6.1.4 (k) cA, (l)/(m) pathLen, (n) keyUsage."""
    if _constraints(path[0])[0]:
        raise VerificationError("cert_chain_invalid", f"{what}: the leaf is a CA certificate")
    for below, issuer in enumerate(path[1:]):  # ``below``: CA certificates under it, not the leaf
        name = _name(issuer)
        if not _is_ca(issuer, "key_cert_sign"):
            raise VerificationError("cert_chain_invalid", f"{what}: {name} is not a CA")
        limit = _constraints(issuer)[1]
        if limit is not None and below > limit:
            raise VerificationError("cert_chain_invalid", f"{what}: {name} path length exceeded")


def verify_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    when: datetime,
    what: str,
) -> x509.Certificate:
    """Verify ``chain`` (leaf first) up to one of ``roots``; return the root reached."""
    if not chain:
        raise VerificationError("cert_chain_invalid", f"{what}: empty chain")
    for cert, issuer in itertools.pairwise(chain):
        _signed_by(cert, issuer, what)
    path = list(chain)
    root = next((r for r in roots if r == path[-1]), None)
    if root is None:
        last = path[-1]
        root = next((r for r in roots if r.subject == last.issuer), None)
        if root is None or last.issuer == last.subject:
            raise VerificationError("root_not_trusted", f"{what}: chain ends at an untrusted root")
        _signed_by(last, root, what)
        path.append(root)
    _check_ca_path(path, what)
    for cert in path:
        name = _name(cert)
        check_window(cert.not_valid_before_utc, cert.not_valid_after_utc, when, f"{what}: {name}")
    return root


def check_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    certs: Sequence[x509.Certificate],
    when: datetime,
    what: str,
) -> None:
    """Verify ``crl`` against ``issuer`` and its window; ``crl_revoked`` if a cert is listed.

    Every cert in ``certs`` must be issued (name and signature) by ``issuer``: a CRL says
    nothing about another CA's certificates, so one that is not covered is refused, not skipped.
    """
    if not _is_ca(issuer, "crl_sign"):
        raise VerificationError("collateral_invalid", f"{what}: CRL issuer is not a CRL-signing CA")
    if crl.issuer != issuer.subject:
        detail = f"{what}: CRL is not from {_name(issuer)}"
        raise VerificationError("collateral_invalid", detail)
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise VerificationError("collateral_invalid", f"{what}: CRL signature does not verify")
    check_window(crl.last_update_utc, crl.next_update_utc, when, f"{what} CRL")
    for cert in certs:
        name = _name(cert)
        if not _issued(cert, issuer):
            raise VerificationError("collateral_invalid", f"{what}: CRL does not cover {name}")
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise VerificationError("crl_revoked", f"{what}: {name} is revoked")
