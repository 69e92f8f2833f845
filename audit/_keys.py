"""The log signing key file: PKCS#8 PEM, created once with mode 0600 so restarts keep the log."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ._errors import AuditUnavailable

__all__ = ["load_or_create_signing_key"]


def load_or_create_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the Ed25519 key at ``path``, or generate it there (exclusive create, mode 0600)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load(target)
    except OSError as exc:
        raise AuditUnavailable("cannot create the log signing key file") from exc
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _load(target: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(target.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditUnavailable("cannot load the log signing key file") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditUnavailable("the log signing key file is not an Ed25519 key")
    return key
