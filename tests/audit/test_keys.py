"""The log signing key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit import AuditUnavailable, load_or_create_signing_key


def _pub(key: object) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)  # type: ignore[attr-defined]


def test_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log.key"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _pub(load_or_create_signing_key(path)) == _pub(key)


def test_garbage_key_file(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    path.write_bytes(b"not a key")
    with pytest.raises(AuditUnavailable):
        load_or_create_signing_key(path)
