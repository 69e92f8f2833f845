"""Reading a bundle's zip archive in bounded memory.

Every entry name is checked and every size capped from the central directory, before anything
is inflated. Members are inflated a MiB at a time (``ZipFile.read`` inflates a member's whole
compressed stream in one step, however small its declared size, before cutting it down to that
size), so the declared sizes bound what is held. Members are read whole, except
``records/records.jsonl``, which grows with the window: it is hashed once as a stream and later
read line by line, each line capped. Entries carry no extra fields: a Unicode Path field (0x7075)
is covered by no hash, and unzip tools extract under its name rather than the verified one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from ._errors import BundleInvalid, kind_of

__all__ = ["MAX_LINE", "STREAMED", "Archive", "open_archive"]

STREAMED = "records/records.jsonl"
MAX_LINE = 1 << 20
"""A record line: a DSSE envelope and an inclusion proof, a few KiB in any export."""
_MAX_TOTAL = 2 << 30
_MAX_MEMBER = 64 << 20
"""Any member read whole; a manifest listing a million leaves is about 15 MiB."""
_MAX_HELD = 256 << 20
"""All members read whole, together."""
_MAX_RATIO = 100
"""Inflated / compressed size: exports reach about 6; a zip bomb about 1,000."""
_RATIO_FLOOR = 1 << 20
"""Members up to this size may compress as well as they like: they cannot exhaust memory."""
_LOCAL_HEADER = 30  # bytes of a local file header before its name and extra field
_PIECE = 1 << 20  # bytes inflated at a time


def _check_name(info: zipfile.ZipInfo, seen: set[str]) -> None:
    """One name per entry, relative and without ``..``, and no data in directory entries: an
    unzip tool must extract exactly the files that were verified. No control or other
    non-printable character either: names are shown on terminals, where a carriage return or
    an ANSI escape could overwrite the verdict."""
    name = info.filename
    parts = name.removesuffix("/").split("/")
    if name in seen:
        raise BundleInvalid(f"duplicate zip entry {name[:80]!r}")
    if ":" in parts[0] or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise BundleInvalid(f"unsafe zip entry name {name[:80]!r}")
    if not name.isprintable():  # NUL and every C0/C1 control, bidi overrides, surrogates
        raise BundleInvalid(f"zip entry name with a non-printable character {name[:80]!r}")
    if info.is_dir() and info.file_size:
        raise BundleInvalid(f"directory entry {name[:80]!r} carries data")
    if info.extra:
        raise BundleInvalid(f"zip entry {name[:80]!r} has extra fields (exports write none)")
    seen.add(name)


def _check_local_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """The entry's local header carries no extra field either (unzip tools read some there)."""
    assert zf.fp is not None
    zf.fp.seek(info.header_offset)
    header = zf.fp.read(_LOCAL_HEADER)
    if len(header) != _LOCAL_HEADER or header[:4] != b"PK\x03\x04":
        raise BundleInvalid(f"zip entry {info.filename[:80]!r} has no local header")
    if int.from_bytes(header[28:30], "little"):
        raise BundleInvalid(f"zip entry {info.filename[:80]!r} has extra fields (exports write none)")


def _check_sizes(infos: list[zipfile.ZipInfo]) -> None:
    if sum(i.file_size for i in infos) > _MAX_TOTAL:
        raise BundleInvalid("bundle is too large")
    held = 0
    for info in infos:
        name = info.filename[:80]
        if info.file_size > max(_RATIO_FLOOR, _MAX_RATIO * info.compress_size):
            raise BundleInvalid(f"zip entry {name!r} inflates more than {_MAX_RATIO}-fold")
        if info.filename != STREAMED:
            if info.file_size > _MAX_MEMBER:
                raise BundleInvalid(f"zip entry {name!r} is larger than {_MAX_MEMBER >> 20} MiB")
            held += info.file_size
    if held > _MAX_HELD:
        raise BundleInvalid(f"the bundle's files besides {STREAMED} exceed "
                            f"{_MAX_HELD >> 20} MiB")


@dataclass(frozen=True)
class Archive:
    """An open bundle: every member's SHA-256, and the bytes of all but ``STREAMED``."""

    zf: zipfile.ZipFile
    files: dict[str, bytes]
    digests: dict[str, str]
    """SHA-256 hex of every file (not directory) entry, ``STREAMED`` included."""

    @classmethod
    def read(cls, zf: zipfile.ZipFile) -> Archive:
        infos = zf.infolist()
        seen: set[str] = set()
        for info in infos:
            _check_name(info, seen)
            _check_local_header(zf, info)
        _check_sizes(infos)
        files, digests = {}, {}
        for info in infos:
            if info.is_dir():
                continue
            if info.filename == STREAMED:
                digests[STREAMED] = _stream_digest(zf, info)
            else:
                files[info.filename] = _read_member(zf, info)
                digests[info.filename] = hashlib.sha256(files[info.filename]).hexdigest()
        return cls(zf, files, digests)

    def lines(self) -> Iterator[bytes | None]:
        """The lines of ``STREAMED`` without their ``\\n``, ``None`` for one longer than
        ``MAX_LINE`` (skipped, never held whole); none when the bundle lacks it."""
        if STREAMED not in self.digests:
            return
        # ZipFile.open gives a ZipExtFile (typed IO[bytes]), whose readline(limit) reads 512
        # bytes at a time; a BufferedReader over it splits lines at C speed.
        member = cast(zipfile.ZipExtFile, self.zf.open(STREAMED))
        with io.BufferedReader(member, 1 << 16) as stream:  # closes the member too
            yield from _lines(stream)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, inflated a piece at a time: never more than its declared size (and its
    CRC checked at the end, as ``ZipFile.read`` does)."""
    data = bytearray()
    with zf.open(info) as stream:
        while chunk := stream.read(_PIECE):
            data += chunk
    return bytes(data)


def _stream_digest(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with zf.open(info) as stream:  # inflating it all also checks its CRC, up front
        while chunk := stream.read(_PIECE):
            digest.update(chunk)
    return digest.hexdigest()


def _lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    while line := stream.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE or line.endswith(b"\n"):
            yield line.removesuffix(b"\n")
            continue
        while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
            pass  # the rest of an overlong line, read in bounded pieces and dropped
        yield None


@contextlib.contextmanager
def _as_bundle_invalid() -> Iterator[None]:
    try:
        yield
    except BundleInvalid:
        raise
    except Exception as exc:  # crafted archives raise zlib.error, NotImplementedError, ...
        raise BundleInvalid(f"cannot read the bundle as a zip archive ({kind_of(exc)})") from exc


@contextlib.contextmanager
def open_archive(source: str | Path | bytes) -> Iterator[Archive]:
    """The checked archive, open while the caller verifies it; ``BundleInvalid`` when it is
    not a readable zip within the caps above."""
    with contextlib.ExitStack() as stack:
        with _as_bundle_invalid():
            handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
            stack.enter_context(handle)
            archive = Archive.read(stack.enter_context(zipfile.ZipFile(handle)))
        yield archive
