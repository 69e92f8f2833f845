"""Reading a bundle's zip archive in bounded memory, laid out as an export writes it.

The end record and the central directory are read and checked here before ``zipfile`` reads
anything: the file, the central directory and its number of entries are capped, and the
archive must be laid out as an export writes it, which every unzip tool reads alike: entries
back to back from the first byte, each local header restating its central directory entry, the
central directory right after the last entry and the end record right after it, with no
archive comment, no zip64 records and nothing after it. Otherwise a reader that walks local
headers (Java's ``ZipInputStream``) could extract an entry no central directory entry lists, in
place of the verified one. Entries are regular files: unzip tools make a symbolic link of an
entry whose attributes say so, its data the target.

Every entry name is checked and every size capped from the central directory, before anything
is inflated. Members are inflated here, a MiB at a time, from exactly the compressed bytes their
entries declare, and each must be exactly one whole deflate stream (or stored data) of its
declared size and CRC-32. ``zipfile`` stops reading a member at its declared size, and checks
the CRC over what it read: data past that size (more deflate output, or more stored bytes),
with its CRC forged to match the whole, would be extracted by unzip tools, yet never verified.
Members are read whole, except ``records/records.jsonl``, which grows with the window: it is
hashed once as a stream and later read line by line, each line capped. Entries carry no extra
fields: a Unicode Path field (0x7075) is covered by no hash, and unzip tools extract under its
name rather than the verified one. Every other header field is what an export writes (versions,
time, attributes), so that no byte of the archive escapes the checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from ._errors import BundleInvalid, kind_of

__all__ = ["ATTRIBUTES", "MADE_BY", "MAX_DIRECTORY", "MAX_ENTRIES", "MAX_LINE", "NEEDED", "STREAMED",
           "Archive", "open_archive"]

STREAMED = "records/records.jsonl"
MAX_LINE = 1 << 20
"""A record line: a DSSE envelope and an inclusion proof, a few KiB in any export."""
_MAX_TOTAL = 2 << 30
"""The bundle file, and its members' inflated sizes together."""
MAX_ENTRIES = 0xFFFF
"""Entries: as many as an end record counts without zip64 records, which zipfile writes past
this many. An export holds seven files, at most 65 checkpoints, and the identity documents and
the policy bundles' files that the window's records cite: a few dozen entries in most."""
MAX_DIRECTORY = 16 << 20
"""The central directory: 46 bytes and the name per entry, under 200 in an export."""
_MAX_MEMBER = 64 << 20
"""Any member read whole; a manifest listing a million leaves is about 15 MiB."""
_MAX_HELD = 256 << 20
"""All members read whole, together."""
_MAX_RATIO = 100
"""Inflated / compressed size: exports reach about 6; a zip bomb about 1,000."""
_RATIO_FLOOR = 1 << 20
"""Members up to this size may compress as well as they like: they cannot exhaust memory."""
_PIECE = 1 << 20  # bytes inflated at a time, at most
_READ = 1 << 16  # compressed bytes read at a time
_END = struct.Struct("<4s4H2LH")
"""The end record: signature, disk numbers (this one, the central directory's), entries (on
this disk, in all), central directory size and offset, comment length."""
_CENTRAL = struct.Struct("<4s6H3L5H2L")
"""A central directory header: signature, versions (made by, needed), flags, method, time, date,
CRC-32, sizes (compressed, inflated), lengths (name, extra field, comment), disk, attributes
(internal, external), local header offset; then the name."""
_LOCAL = struct.Struct("<4s5H3L2H")
"""A local header: signature, then what a central directory header holds from its version
needed to its extra field length (bytes 6 to 32 there); then the name."""
_ZIP64_LOCATOR, _ZIP64_LOCATOR_SIZE = b"PK\x06\x07", 20  # right before the end record
_UTF8 = 0x800  # flag: the name is UTF-8 (zipfile sets it for names beyond ASCII)
_DOS_DIRECTORY, _DOS_REPARSE = 0x10, 0x400  # MS-DOS and Windows attributes
# What an export writes in every entry (``_export._Zip``): made by Unix (3), zip 2.0 (20) to
# make and to extract; 1980-01-01 00:00 (MS-DOS time 0, date (0 << 9) | (1 << 5) | 1); internal
# attributes 0; external attributes: Unix mode 0600 and no file type (a regular file).
MADE_BY = (3 << 8) | 20
NEEDED = 20
_DOS_TIME, _DOS_DATE = 0, 33
ATTRIBUTES = 0o600 << 16


class _Entry(NamedTuple):
    """A central directory entry, as stored."""

    name: str
    raw: bytes  # the name's bytes
    restated: bytes  # what its local header must restate (central directory bytes 6 to 32)
    made_by: int
    needed: int
    flags: int
    method: int
    time: int
    date: int
    crc: int
    compressed: int
    size: int
    extra: int  # extra field length
    comment: int  # comment length
    disk: int
    internal: int  # attributes
    attributes: int  # external
    offset: int  # of its local header


def _directory(fp: IO[bytes]) -> tuple[list[_Entry], int]:
    """The central directory's entries and its offset, from an end record that ends the file
    (no comment, nothing after it) and a central directory that ends where it begins."""
    size = fp.seek(0, io.SEEK_END)
    if size > _MAX_TOTAL:
        raise BundleInvalid(f"the bundle file is larger than {_MAX_TOTAL >> 30} GiB")
    at = size - _END.size
    fp.seek(max(at - _ZIP64_LOCATOR_SIZE, 0))
    tail = fp.read()  # the end record, and where a zip64 locator would be
    if at < 0 or tail[-_END.size:-_END.size + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        raise BundleInvalid("the file is not a zip archive ending in its end record (exports "
                            "write no archive comment and nothing after it)")
    if tail.startswith(_ZIP64_LOCATOR):
        raise BundleInvalid("the zip archive has zip64 end records (exports write none)")
    _, disk, first_disk, here, count, length, start, _ = _END.unpack(tail[-_END.size:])
    if disk or first_disk or here != count:
        raise BundleInvalid("the zip archive spans several disks")
    if count > MAX_ENTRIES:  # the field holds no more: a larger archive needs zip64 records
        raise BundleInvalid(f"the zip archive has more than {MAX_ENTRIES:,} entries")
    if length > MAX_DIRECTORY:
        raise BundleInvalid(f"the zip central directory is larger than {MAX_DIRECTORY >> 20} MiB")
    if start + length != at:
        raise _misplaced("the zip end record", at, start + length)
    fp.seek(start)
    directory = fp.read(length)
    entries: list[_Entry] = []
    at = 0
    while at < length:
        if len(entries) == count:
            raise BundleInvalid(f"the zip central directory holds more entries than its end "
                                f"record counts ({count})")
        header = directory[at:at + _CENTRAL.size]
        if len(header) < _CENTRAL.size or header[:4] != b"PK\x01\x02":
            raise BundleInvalid("malformed zip central directory")
        fields = _CENTRAL.unpack(header)
        flags, raw = fields[3], directory[at + _CENTRAL.size:at + _CENTRAL.size + fields[10]]
        try:
            name = raw.decode("utf-8" if flags & _UTF8 else "cp437")  # as zipfile decodes it
        except UnicodeDecodeError:
            raise BundleInvalid(f"zip entry name {raw[:80]!r} is not UTF-8") from None
        entries.append(_Entry(name, raw, header[6:32], *fields[1:10], *fields[11:17]))
        at += _CENTRAL.size + sum(fields[10:13])
    if at != length:
        raise BundleInvalid("malformed zip central directory")
    if len(entries) != count:
        raise BundleInvalid(f"the zip central directory holds fewer entries than its end "
                            f"record counts ({count})")
    return entries, start


def _misplaced(what: str, offset: int, expected: int) -> BundleInvalid:
    return BundleInvalid(f"{what} is at offset {offset}, not {expected}: exports write the "
                         "entries back to back from the first byte, then the central directory "
                         "and the end record, with nothing between or around them")


def _check_entry(entry: _Entry, seen: set[str]) -> None:
    """One name per entry, relative and without ``..``: an unzip tool must extract exactly the
    files that were verified. No control or other non-printable character either: names are
    shown on terminals, where a carriage return or an ANSI escape could overwrite the verdict.
    A regular file, stored or deflated, with no extra field, comment, encryption or data
    descriptor: what an export writes."""
    name = entry.name
    parts = name.removesuffix("/").split("/")
    if name in seen:
        raise BundleInvalid(f"duplicate zip entry {name[:80]!r}")
    if ":" in parts[0] or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise BundleInvalid(f"unsafe zip entry name {name[:80]!r}")
    if not name.isprintable():  # NUL and every C0/C1 control, bidi overrides, surrogates
        raise BundleInvalid(f"zip entry name with a non-printable character {name[:80]!r}")
    seen.add(name)
    name = name[:80]
    kind = _kind(entry)
    if kind is not None:
        raise BundleInvalid(f"zip entry {name!r} is {kind}, not a regular file (exports hold "
                            "regular files only)")
    if entry.extra:
        raise BundleInvalid(f"zip entry {name!r} has extra fields (exports write none)")
    if entry.comment:
        raise BundleInvalid(f"zip entry {name!r} has a comment (exports write none)")
    if entry.disk:
        raise BundleInvalid("the zip archive spans several disks")
    if entry.flags & ~_UTF8:  # encrypted, a data descriptor after the data, ...
        raise BundleInvalid(f"zip entry {name!r} has flags {entry.flags:#06x} (exports set "
                            f"none but {_UTF8:#06x}, UTF-8 names)")
    if entry.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleInvalid(f"zip entry {name!r} uses compression method {entry.method} "
                            "(exports deflate)")
    if (entry.made_by, entry.needed, entry.time, entry.date, entry.internal, entry.attributes) \
            != (MADE_BY, NEEDED, _DOS_TIME, _DOS_DATE, 0, ATTRIBUTES):
        raise BundleInvalid(f"zip entry {name!r} has header fields an export does not write "
                            "(versions, time, or attributes other than a regular file's with "
                            "mode 0600)")


def _kind(entry: _Entry) -> str | None:
    """What an entry that is not a regular file is, by its name and its Unix mode (the high
    16 bits of its attributes) or MS-DOS attributes; ``None`` for a regular file."""
    mode = entry.attributes >> 16
    if entry.name.endswith("/") or stat.S_ISDIR(mode) or entry.attributes & _DOS_DIRECTORY:
        return "a directory"
    if stat.S_ISLNK(mode) or entry.attributes & _DOS_REPARSE:
        return "a symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "a special file"
    return None


def _check_sizes(entries: list[_Entry]) -> None:
    if sum(e.size for e in entries) > _MAX_TOTAL:
        raise BundleInvalid("bundle is too large")
    held = 0
    for entry in entries:
        name = entry.name[:80]
        if entry.size > max(_RATIO_FLOOR, _MAX_RATIO * entry.compressed):
            raise BundleInvalid(f"zip entry {name!r} inflates more than {_MAX_RATIO}-fold")
        if entry.name != STREAMED:
            if entry.size > _MAX_MEMBER:
                raise BundleInvalid(f"zip entry {name!r} is larger than {_MAX_MEMBER >> 20} MiB")
            held += entry.size
    if held > _MAX_HELD:
        raise BundleInvalid(f"the bundle's files besides {STREAMED} exceed "
                            f"{_MAX_HELD >> 20} MiB")


def _check_layout(fp: IO[bytes], entries: list[_Entry], directory: int) -> None:
    """Entries back to back from the first byte, in the central directory's order, each local
    header restating its central directory entry, the central directory right after the last."""
    at = 0
    for entry in entries:
        name = entry.name[:80]
        if entry.offset != at:
            raise _misplaced(f"zip entry {name!r}", entry.offset, at)
        fp.seek(at)
        header = fp.read(_LOCAL.size + len(entry.raw))
        if len(header) != _LOCAL.size + len(entry.raw) or header[:4] != b"PK\x03\x04":
            raise BundleInvalid(f"zip entry {name!r} has no local header")
        if header[28:30] != b"\0\0":  # unzip tools read some extra fields there
            raise BundleInvalid(f"zip entry {name!r} has extra fields (exports write none)")
        if header[4:_LOCAL.size] != entry.restated or header[_LOCAL.size:] != entry.raw:
            raise BundleInvalid(f"zip entry {name!r}: its local header differs from its central "
                                "directory entry (version, flags, method, time, CRC, sizes or "
                                "name)")
        at += len(header) + entry.compressed
    if directory != at:
        raise _misplaced("the zip central directory", directory, at)


@dataclass(frozen=True)
class Archive:
    """An open bundle: every member's SHA-256, and the bytes of all but ``STREAMED``."""

    fp: IO[bytes]
    entries: dict[str, _Entry]
    files: dict[str, bytes]
    digests: dict[str, str]
    """SHA-256 hex of every entry, ``STREAMED`` included."""

    @classmethod
    def read(cls, fp: IO[bytes], entries: list[_Entry]) -> Archive:
        """Every member of the archive in ``fp``, whose central directory ``entries`` and
        layout were checked."""
        files, digests = {}, {}
        for entry in entries:
            digest = hashlib.sha256()
            if entry.name == STREAMED:
                for piece in _member(fp, entry):
                    digest.update(piece)
            else:
                files[entry.name] = b"".join(_member(fp, entry))
                digest.update(files[entry.name])
            digests[entry.name] = digest.hexdigest()
        return cls(fp, {e.name: e for e in entries}, files, digests)

    def lines(self) -> Iterator[bytes | None]:
        """The lines of ``STREAMED`` without their ``\\n``, ``None`` for one longer than
        ``MAX_LINE`` (skipped, never held whole); none when the bundle lacks it."""
        if STREAMED not in self.digests:
            return
        raw = _Pieces(_member(self.fp, self.entries[STREAMED]))
        with io.BufferedReader(raw, 1 << 16) as stream:  # splits lines at C speed
            yield from _lines(stream)


def _member(fp: IO[bytes], entry: _Entry) -> Iterator[bytes]:
    """A member's bytes, a piece at a time, from exactly its compressed bytes: one whole
    deflate stream (or stored data) that ends where they do, inflating to exactly its declared
    size, with its CRC-32; ``BundleInvalid`` otherwise. Inflated output is bounded by the
    declared size (plus one piece) before it is refused."""
    name = entry.name[:80]
    fp.seek(entry.offset + _LOCAL.size + len(entry.raw))
    if entry.method == zipfile.ZIP_STORED and entry.compressed != entry.size:
        raise BundleInvalid(f"zip entry {name!r} is stored with two different sizes")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if entry.method == zipfile.ZIP_DEFLATED else None
    left, size, crc = entry.compressed, 0, 0
    while left:
        data = fp.read(min(left, _READ))
        if not data:
            raise BundleInvalid(f"zip entry {name!r} is cut short")
        left -= len(data)
        for piece in _inflated(inflater, data):
            size += len(piece)
            if size > entry.size:
                raise BundleInvalid(f"zip entry {name!r} holds more than its declared size")
            crc = zlib.crc32(piece, crc)
            yield piece
    if inflater is not None and (not inflater.eof or inflater.unused_data):
        raise BundleInvalid(f"zip entry {name!r}: its compressed data is not one whole deflate "
                            "stream ending where the entry does")
    if size != entry.size:
        raise BundleInvalid(f"zip entry {name!r} is shorter than its declared size")
    if crc != entry.crc:
        raise BundleInvalid(f"zip entry {name!r} fails its CRC-32 check")


def _inflated(inflater: zlib._Decompress | None, data: bytes) -> Iterator[bytes]:
    """What ``data`` inflates to, a piece (at most ``_PIECE`` bytes) at a time; stored data
    as it is. A full piece may leave output still held back with the input all used (zlib even
    says the stream ended): inflating goes on until a piece comes short."""
    if inflater is None:
        yield data
        return
    while True:
        try:
            piece = inflater.decompress(data, _PIECE)
        except zlib.error as exc:
            raise BundleInvalid(f"a zip entry's compressed data is corrupt ({exc})") from None
        if piece:
            yield piece
        data = inflater.unconsumed_tail
        if not data and len(piece) < _PIECE:
            return


class _Pieces(io.RawIOBase):
    """A readable stream over an iterator of byte strings."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces, self._held = pieces, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._held:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._held = memoryview(piece)
        n = min(len(buffer), len(self._held))
        buffer[:n] = self._held[:n]
        self._held = self._held[n:]
        return n


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
            entries, directory = _directory(handle)
            seen: set[str] = set()
            for entry in entries:
                _check_entry(entry, seen)
            _check_sizes(entries)
            _check_layout(handle, entries, directory)
            archive = Archive.read(handle, entries)
        yield archive
