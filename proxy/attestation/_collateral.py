"""Verification collateral passed in by the caller (never fetched at verify time).

TDX: Intel PCS v4 TCB info and QE identity JSON bodies with their issuer chain (the
``TCB-Info-Issuer-Chain`` header), the PCK CRL with its issuer chain, and the root CA CRL.
SEV-SNP: extra certificates (VCEK/VLEK and the KDS ``cert_chain``) when the evidence has none.
"""

from __future__ import annotations

import base64
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Collateral", "load_collateral"]

_CERT_SUFFIXES = (".pem", ".der", ".crt", ".cer")


@dataclass(frozen=True)
class Collateral:
    """Collateral for `verify_evidence`; every field is optional."""

    certificates: bytes = b""
    """Extra certificates (PEM bundle), searched for the SEV-SNP signing key and its chain."""
    tcb_infos: tuple[bytes, ...] = ()
    """PCS ``/tdx/certification/v4/tcb`` bodies; the one whose FMSPC matches is used."""
    qe_identity: bytes | None = None
    """PCS ``/tdx/certification/v4/qe/identity`` body."""
    tcb_signing_chain: bytes = b""
    """PEM chain that signs TCB info and QE identity (TCB Signing cert, then root)."""
    pck_crl: bytes | None = None
    """PCK CRL (DER or PEM) for the CA that issued the quote's PCK certificate."""
    pck_crl_chain: bytes = b""
    """PEM issuer chain of the PCK CRL (optional: the quote's own chain is used)."""
    root_crl: bytes | None = None
    """Intel SGX Root CA CRL (DER or PEM)."""

    @classmethod
    def from_dir(cls, path: str | Path) -> Collateral:
        """Load collateral from a folder, classified by file name (see docs/attestation.md)."""
        fields: dict[str, list[bytes]] = {k: [] for k in ("certs", "tcb", "qe", "sign", "crl",
                                                          "crlchain", "root")}
        for file in sorted(Path(path).iterdir()):
            kind = _classify(file.name.lower(), file)
            if kind is not None:
                fields[kind].append(file.read_bytes())
        return cls(
            certificates=b"".join(_as_pem(c) for c in fields["certs"]),
            tcb_infos=tuple(fields["tcb"]),
            qe_identity=next(iter(fields["qe"]), None),
            tcb_signing_chain=b"".join(fields["sign"]),
            pck_crl=next(iter(fields["crl"]), None),
            pck_crl_chain=b"".join(fields["crlchain"]),
            root_crl=next(iter(fields["root"]), None),
        )


def _is_pem_text(path: Path) -> bool:
    return path.suffix == ".txt" and b"-----BEGIN CERTIFICATE-----" in path.read_bytes()


def _classify(name: str, path: Path) -> str | None:
    compact = name.replace("_", "").replace("-", "")
    rules = (
        ("tcbinfo" in compact and name.endswith(".json"), "tcb"),
        ("qeidentity" in compact and name.endswith(".json"), "qe"),
        ("tcbsigning" in compact or "tcbinfoissuer" in compact, "sign"),
        ("pckcrl" in compact and "chain" in compact, "crlchain"),
        ("pckcrl" in compact, "crl"),
        ("rootcrl" in compact, "root"),
        (name.endswith(_CERT_SUFFIXES) or _is_pem_text(path), "certs"),
    )
    return next((kind for matched, kind in rules if matched), None)


def _as_pem(data: bytes) -> bytes:
    if b"-----BEGIN" in data:
        return data if data.endswith(b"\n") else data + b"\n"
    body = "\n".join(textwrap.wrap(base64.b64encode(data).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def load_collateral(folder: str | Path | None) -> Collateral | None:
    """The collateral in ``folder`` (``None`` when no folder is given); ``ValueError`` with a
    readable message when it cannot be read."""
    if not folder:
        return None
    try:
        return Collateral.from_dir(folder)
    except OSError as exc:
        raise ValueError(f"cannot read the collateral folder {folder}: "
                         f"{exc.strerror or exc}") from exc
