"""The log signing key file."""

from __future__ import annotations

import errno
import os
import stat
import threading
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


def test_crash_while_writing_a_new_key_does_not_block_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys" / "log.key"

    def crash(*_args: object, **_kwargs: object) -> object:
        raise OSError("simulated crash before the key is written")

    with monkeypatch.context() as patch:
        patch.setattr("audit._keys.os.fdopen", crash)
        with pytest.raises((AuditUnavailable, OSError)):
            load_or_create_signing_key(path)
    key = load_or_create_signing_key(path)  # no empty key file was left in the way
    assert _pub(load_or_create_signing_key(path)) == _pub(key)


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    for trial in range(20):
        path = tmp_path / str(trial) / "log.key"
        barrier = threading.Barrier(4)
        keys: list[bytes] = []

        def start(path: Path = path, barrier: threading.Barrier = barrier,
                  keys: list[bytes] = keys) -> None:
            barrier.wait()
            keys.append(_pub(load_or_create_signing_key(path)))

        threads = [threading.Thread(target=start) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(keys) == 4 and len(set(keys)) == 1
        assert _pub(load_or_create_signing_key(path)) == keys[0]
        assert [p.name for p in path.parent.iterdir()] == ["log.key"]  # no temporary file left


def test_empty_key_file_names_the_remedy(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    path.touch()
    with pytest.raises(AuditUnavailable, match="empty"):
        load_or_create_signing_key(path)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_file_systems_without_hard_links_still_get_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def no_links(*_: object) -> None:  # as vfat or some network mounts answer link(2)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "log.key"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _pub(load_or_create_signing_key(path)) == _pub(key)
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]  # no temporary file left
    # Another process got there first: its key is used, not overwritten.
    other = tmp_path / "other.key"
    first = load_or_create_signing_key(other)
    monkeypatch.setattr(Path, "exists", lambda self: False)  # both saw no file at the start
    assert _pub(load_or_create_signing_key(other)) == _pub(first)
