"""The log signing key file: PKCS#8 PEM, created once with mode 0600 so restarts keep the log."""

from __future__ import annotations

import errno
import os
import secrets
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
    """Load the Ed25519 key at ``path``, or generate it there (mode 0600).

    The key is written and fsynced under a temporary name in the same directory, then linked
    into place: ``link`` never replaces a file, so the first of several starting processes wins
    and the others load its key, and a crash never leaves a partly written key file behind.
    """
    target = Path(path)
    if target.exists():
        return _load(target)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return _load(target)  # another process created it first: use theirs
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if not _create_in_place(target, pem):  # a file system without hard links
                return _load(target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise AuditUnavailable("cannot create the log signing key file") from exc
    return key


# link(2) errors of file systems that have no hard links (vfat, some network mounts).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV})


def _create_in_place(target: Path, pem: bytes) -> bool:
    """Exclusive create of the key file itself, written and fsynced; False if it exists.
    (Only where hard links are missing: a crash while writing leaves a file to remove.)"""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable (POSIX: fsync of the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load(target: Path) -> Ed25519PrivateKey:
    try:
        raw = target.read_bytes()
        if not raw:  # left by an interrupted first start of an older release: holds no key
            raise AuditUnavailable("the log signing key file is empty; remove it to create a new key")
        key = load_pem_private_key(raw, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditUnavailable("cannot load the log signing key file") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditUnavailable("the log signing key file is not an Ed25519 key")
    return key
