"""Malformed, crafted and simulated bundles: a clean failure naming the problem, never a crash."""

from __future__ import annotations

import hashlib
import io
import json
import random
import stat
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import load_or_create_signing_key
from proxy.cli import main
from proxy.evidence import BundleInvalid, BundleVerdict, Check, ExportFailed, verify_bundle
from proxy.evidence._archive import ATTRIBUTES, MADE_BY
from proxy.evidence._export import _Zip
from proxy.evidence._manifest import sign_manifest
from tests.evidence.conftest import Traffic, export_entry, rezip, unzip

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def log_key(traffic: Traffic) -> Ed25519PrivateKey:
    return load_or_create_signing_key(traffic.gateway.data_dir / "keys" / "log-signing-key.pem")


def _resign(files: Files, key: Ed25519PrivateKey, manifest: Any) -> Files:
    """Rehash every file into ``manifest`` and sign it, as the log key holder could."""
    if isinstance(manifest, dict):
        manifest["files"] = {n: hashlib.sha256(d).hexdigest() for n, d in sorted(files.items())
                             if n not in ("manifest.json", "manifest.sig")}
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return {**files, "manifest.json": raw, "manifest.sig": sign_manifest(raw, key)}


def _first_record(files: Files, **changes: Any) -> Files:
    lines = files["records/records.jsonl"].splitlines()
    item = {**json.loads(lines[0]), **changes}
    return {**files, "records/records.jsonl": b"\n".join([json.dumps(item).encode(), *lines[1:]])}


def _identity(files: Files, raw: bytes) -> Files:
    return {n: (raw if n.startswith("identity/") else d) for n, d in files.items()}


def _manifest(bundle: Files, **changes: Any) -> Files:
    manifest = {**json.loads(bundle["manifest.json"]), **changes}
    return {**bundle, "manifest.json": json.dumps(manifest).encode()}


def _envelope(files: Files, envelope: Any) -> Files:
    return _first_record(files, envelope=json.dumps(envelope))


def _long_first_line(files: Files) -> Files:
    """A first record line over the 1 MiB line cap (random hex: it deflates only 2-fold)."""
    pad = random.Random(0).randbytes(600_000).hex()
    first = json.dumps({"pad": pad}).encode()
    return {**files, "records/records.jsonl": first + b"\n" + files["records/records.jsonl"]}


# name → (mutation of the bundle's files, the failed check it must produce)
FILE_CASES: dict[str, tuple[Callable[[Files], Files], str]] = {
    "inclusion is a list": (lambda f: _first_record(f, inclusion=[]), "inclusion"),
    "inclusion is null": (lambda f: _first_record(f, inclusion=None), "inclusion"),
    "inclusion index is a string": (
        lambda f: _first_record(f, inclusion={"index": "0", "size": 1, "hashes": []}), "inclusion"),
    "leaf_index is 1e999 (infinity)": (
        lambda f: _first_record(f, leaf_index=float("inf")), "record signature"),
    "leaf_index is a string": (lambda f: _first_record(f, leaf_index="1"), "record signature"),
    "leaf_index is negative": (lambda f: _first_record(f, leaf_index=-1), "record signature"),
    "record_id is a number": (lambda f: _first_record(f, record_id=7), "record signature"),
    "envelope is an object": (lambda f: _first_record(f, envelope={}), "record signature"),
    "envelope is a JSON list": (lambda f: _envelope(f, []), "record signature"),
    "envelope has no signatures": (lambda f: _envelope(f, {"signatures": []}), "record signature"),
    "envelope is a lone surrogate": (
        lambda f: _first_record(f, envelope="\ud800"), "record signature"),
    "record_id is a lone surrogate": (
        lambda f: _first_record(f, record_id="\udfff"), "record signature"),
    "record line over 1 MiB": (_long_first_line, "record signature"),
    "envelope signature is a list": (lambda f: _envelope(f, {"signatures": [[]]}), "record signature"),
    "record line is a list": (
        lambda f: {**f, "records/records.jsonl": b"[]\n"}, "record signature"),
    "record line is not JSON": (
        lambda f: {**f, "records/records.jsonl": b"{\n"}, "record signature"),
    "record line nests too deep": (
        lambda f: {**f, "records/records.jsonl": b"[" * 100_000}, "record signature"),
    "identity document is a list": (lambda f: _identity(f, b"[]"), "attestation"),
    "identity document is not JSON": (lambda f: _identity(f, b"\xff"), "attestation"),
    "identity created is a number": (
        lambda f: _identity(f, json.dumps({"created": 5}).encode()), "attestation"),
    "manifest is a list": (lambda f: {**f, "manifest.json": b"[]"}, "manifest"),
    "manifest records is a list": (lambda f: _manifest(f, records=[]), "manifest"),
    "manifest leaves hold lists": (lambda f: _manifest(f, records={"leaves": [[1]]}), "manifest"),
    "manifest window values are ints": (
        lambda f: _manifest(f, window={"from": 1, "to": 2}), "manifest"),
    "manifest window is a list": (lambda f: _manifest(f, window=[]), "manifest"),
    "manifest log is a string": (lambda f: _manifest(f, log="x"), "manifest"),
    "manifest files is a list": (lambda f: _manifest(f, files=[]), "manifest"),
    "manifest tenant is a number": (lambda f: _manifest(f, tenant=5), "manifest"),
    "manifest vkey is a lone surrogate": (
        lambda f: _manifest(f, log={**json.loads(f["manifest.json"])["log"], "vkey": "\ud800"}),
        "manifest"),
    "manifest latest is a string": (lambda f: _manifest(f, latest_checkpoint="12"), "manifest"),
    "policy index is an object": (
        lambda f: {**f, "policies/index.json": b"{}"}, "policy digest"),
    "policy files mix types": (
        lambda f: {**f, "policies/index.json": b'[{"digest": "sha256:00", "files": [1, "a"]}]'},
        "policy digest"),
    "consistency proof is a list": (
        lambda f: {**f, "checkpoints/consistency.json": b"[[]]"}, "consistency"),
    "consistency sizes are strings": (
        lambda f: {**f, "checkpoints/consistency.json": b'[{"from": "a", "to": 1, "hashes": []}]'},
        "consistency"),
}


def _entry_offsets(data: bytes, name: str) -> tuple[int, list[int]]:
    """(local header offset, central directory header offsets) of entry ``name``."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    central, at = [], data.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + length] == name.encode():
            central.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return info.header_offset, central


def _corrupt_deflate(data: bytes) -> bytes:
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("report.html")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    out = bytearray(data)
    for i in range(start + 5, start + 40):
        out[i] ^= 0xFF
    return bytes(out)


def _compression_99(data: bytes) -> bytes:
    local, central = _entry_offsets(data, "report.html")
    out = bytearray(data)
    out[local + 8] = 99
    for at in central:
        out[at + 10] = 99
    return bytes(out)


def _declare(data: bytes, sizes: dict[str, tuple[int, int]]) -> bytes:
    """The archive with the central directory declaring other (inflated, compressed) sizes for
    some entries: the verifier must refuse them from the declarations, before inflating."""
    out = bytearray(data)
    for name, (size, compressed) in sizes.items():
        for at in _entry_offsets(data, name)[1]:
            out[at + 20:at + 28] = compressed.to_bytes(4, "little") + size.to_bytes(4, "little")
    return bytes(out)


def _policy_files(files: Files, count: int) -> list[str]:
    return [n for n in sorted(files) if n.startswith("policies/") and "/rego/" in n][:count]


def _deflate_bomb(files: Files) -> bytes:
    """``report.html`` replaced by 4 MiB of zeros, deflated about 1,000-fold."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in {**files, "report.html": bytes(4 << 20)}.items():
            zf.writestr(export_entry(name), data)
    return buffer.getvalue()


def _with_entries(files: Files, *extra: tuple[str, bytes], first: bool = False) -> bytes:
    """The bundle's files plus raw ``extra`` entries (ahead of them when ``first``)."""
    entries = [*extra, *files.items()] if first else [*files.items(), *extra]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it writes
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def _unicode_path(files: Files, name: str, shown: str) -> bytes:
    """``name`` carrying an Info-ZIP Unicode Path field (0x7075) that makes unzip tools
    extract it as ``shown``: covered by no hash, so the verified file lands elsewhere."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for entry, data in files.items():
            info = zipfile.ZipInfo(entry)
            if entry == name:
                payload = b"\x01" + zlib.crc32(entry.encode()).to_bytes(4, "little") + shown.encode()
                info.extra = b"\x75\x70" + len(payload).to_bytes(2, "little") + payload
            zf.writestr(info, data)
    return buffer.getvalue()


def _local_extra(raw: bytes) -> bytes:
    """An extra field in the last entry's local header only (the central directory stays
    clean): the extra bytes go after its name, and the central directory moves along."""
    info = max(zipfile.ZipFile(io.BytesIO(raw)).infolist(), key=lambda i: i.header_offset)
    at, field = info.header_offset, b"\x75\x70\x00\x00"
    end = at + 30 + int.from_bytes(raw[at + 26:at + 28], "little")
    out = bytearray(raw[:end] + field + raw[end:])
    out[at + 28:at + 30] = (4).to_bytes(2, "little")
    eocd = len(out) - 22
    central = int.from_bytes(out[eocd + 16:eocd + 20], "little")
    out[eocd + 16:eocd + 20] = (central + len(field)).to_bytes(4, "little")
    return bytes(out)


def _lying_bomb(files: Files) -> bytes:
    """``report.html`` declared as 1,000 zero bytes (under every cap, its CRC right) over a
    deflate stream that inflates to 256 MiB."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = squeeze.compress(bytes(256 << 20)) + squeeze.flush()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            if name != "report.html":
                zf.writestr(export_entry(name), data)
    raw = bytearray(buffer.getvalue())
    eocd = len(raw) - 22  # the member goes in last: its header, then the central directory
    central_at = int.from_bytes(raw[eocd + 16:eocd + 20], "little")
    central, entries = raw[central_at:eocd], int.from_bytes(raw[eocd + 10:eocd + 12], "little")
    name, crc = b"report.html", zlib.crc32(bytes(1000))
    sizes = crc.to_bytes(4, "little") + len(stream).to_bytes(4, "little") + (1000).to_bytes(4, "little")
    when = bytes(2) + (33).to_bytes(2, "little")  # 1980-01-01 00:00, as exports write
    local = (b"PK\x03\x04" + (20).to_bytes(2, "little") + bytes(2) + (8).to_bytes(2, "little")
             + when + sizes + len(name).to_bytes(2, "little") + bytes(2) + name)
    header = (b"PK\x01\x02" + struct.pack("<2H", MADE_BY, 20) + bytes(2) + (8).to_bytes(2, "little")
              + when + sizes + len(name).to_bytes(2, "little") + bytes(8)
              + ATTRIBUTES.to_bytes(4, "little") + central_at.to_bytes(4, "little") + name)
    body = raw[:central_at] + local + stream
    directory = central + header
    tail = (b"PK\x05\x06" + bytes(4) + (entries + 1).to_bytes(2, "little") * 2
            + len(directory).to_bytes(4, "little") + len(body).to_bytes(4, "little") + bytes(2))
    return bytes(body + directory + tail)


def _local_header(name: bytes, data: bytes) -> bytes:
    """A stored entry's local header, name and data, as no central directory lists it."""
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, zlib.crc32(data),
                       len(data), len(data), len(name), 0) + name + data


def _central_at(raw: bytes, offset: int) -> bytes:
    """``raw`` (no archive comment) with its end record pointing at another central directory
    offset."""
    return raw[:-6] + offset.to_bytes(4, "little") + raw[-2:]


def _hidden_entry(raw: bytes) -> bytes:
    """A second ``records/records.jsonl`` (one record of the original's) that no central
    directory entry lists, between the last entry and the central directory: a reader that
    walks local headers (Java's ``ZipInputStream``) extracts it over the verified one."""
    central = int.from_bytes(raw[-6:-2], "little")
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        forged = zf.read("records/records.jsonl").splitlines(keepends=True)[0]
    local = _local_header(b"records/records.jsonl", forged)
    return _central_at(raw[:central] + local + raw[central:], central + len(local))


_SCRIPT = b"#!/bin/sh\necho 'all records verified'\nexit 0\n"


def _self_extracting(files: Files) -> bytes:
    """The files zipped after a shell script, every offset counted from the script's start."""
    buffer = io.BytesIO(_SCRIPT)
    with zipfile.ZipFile(buffer, "a") as zf:
        for name, data in files.items():
            zf.writestr(export_entry(name), data)
    return buffer.getvalue()


def _commented(raw: bytes) -> bytes:
    comment = b"verified"
    return raw[:-2] + len(comment).to_bytes(2, "little") + comment


def _zip64(raw: bytes) -> bytes:
    """Zip64 end records before the end record, restating it (zipfile then reads them)."""
    end = len(raw) - 22
    count, length, start = struct.unpack("<H2L", raw[end + 10:end + 20])
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, length, start)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    return raw[:end] + record + locator + raw[end:]


def _count(raw: bytes, change: int) -> bytes:
    """The end record counting ``change`` more entries than the central directory holds."""
    end = len(raw) - 22
    count = int.from_bytes(raw[end + 10:end + 12], "little") + change
    return raw[:end + 8] + count.to_bytes(2, "little") * 2 + raw[end + 12:]


def _local_crc(raw: bytes, name: str) -> bytes:
    """Entry ``name``'s local header restating another CRC than its central directory entry."""
    at = zipfile.ZipFile(io.BytesIO(raw)).getinfo(name).header_offset
    out = bytearray(raw)
    out[at + 14:at + 18] = bytes(b ^ 0xFF for b in out[at + 14:at + 18])
    return bytes(out)


def _special(files: Files, name: str, mode: int) -> bytes:
    """The files rezipped with entry ``name`` marked (Unix attributes) as ``mode``: unzip
    tools create what the mode says, a symbolic link to its data for ``S_IFLNK``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for entry, data in files.items():
            info = zipfile.ZipInfo(entry)
            if entry == name:
                info.create_system, info.external_attr = 3, mode << 16
            zf.writestr(info, data)
    return buffer.getvalue()


class _Pipe:
    """Somewhere zipfile cannot seek back to: it writes each entry's CRC and sizes in a data
    descriptor after its data, zeros in its local header."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def flush(self) -> None:
        pass


def _streamed(files: Files) -> bytes:
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w") as zf:  # type: ignore[call-overload]  # write-only
        for name, data in files.items():
            with zf.open(name, "w") as member:
                member.write(data)
    return pipe.buffer.getvalue()


# name → (the zip bytes from the bundle's files and bytes, a phrase of the BundleInvalid detail)
def _export_zip(members: list[tuple[str, int, bytes, int, int, int]]) -> bytes:
    """An archive laid out as an export's, from raw members: (name, method, the bytes stored
    for it, declared inflated size, CRC-32, external attributes)."""
    body, directory = bytearray(), bytearray()
    for name, method, data, size, crc, attributes in members:
        raw = name.encode()
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", MADE_BY, 20, 0, method, 0, 33, crc,
                                 len(data), size, len(raw), 0, 0, 0, 0, attributes, len(body)) + raw
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(data),
                            size, len(raw), 0) + raw + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(directory), len(body), 0)
    return bytes(body + directory + end)


def _deflated(data: bytes) -> bytes:
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
    return squeeze.compress(data) + squeeze.flush()


def _smuggled(files: Files, name: str, how: str) -> bytes:
    """The files as an export zips them, but member ``name`` carrying more than the verified
    bytes that ``zipfile`` reads (unzip tools extract it all): deflate output past its declared
    size, stored bytes past it, or a stream that is not one whole deflate stream. The declared
    size and CRC are the verified file's, so ``zipfile`` reads exactly that file."""
    forged = b"<h1>ALL CHECKS PASSED (forged)</h1>"
    members = []
    for entry, data in files.items():
        method, stored, size, crc = zipfile.ZIP_DEFLATED, _deflated(data), len(data), zlib.crc32(data)
        if entry == name and how == "deflated past its size":
            stored = _deflated(data + forged)
        elif entry == name and how == "stored past its size":
            method, stored = zipfile.ZIP_STORED, data + forged
        elif entry == name and how == "bytes after the stream":
            stored = _deflated(data) + forged
        elif entry == name and how == "no final block":
            stored = bytes([stored[0] & 0xFE]) + stored[1:]
        members.append((entry, method, stored, size, crc, ATTRIBUTES))
    return _export_zip(members)


def _attributes(files: Files, name: str, attributes: int) -> bytes:
    return _export_zip([(entry, zipfile.ZIP_DEFLATED, _deflated(data), len(data), zlib.crc32(data),
                         attributes if entry == name else ATTRIBUTES)
                        for entry, data in files.items()])


ZIP_CASES: dict[str, tuple[Callable[[Files, bytes], bytes], str]] = {
    "corrupt deflate stream": (lambda f, raw: _corrupt_deflate(raw), "compressed data is corrupt"),
    "unknown compression method": (lambda f, raw: _compression_99(raw), "method 99"),
    "deflate output past the declared size": (
        lambda f, raw: _smuggled(f, "report.html", "deflated past its size"),
        "'report.html' holds more than its declared size"),
    "stored bytes past the declared size": (
        lambda f, raw: _smuggled(f, "records/records.jsonl", "stored past its size"),
        "'records/records.jsonl' is stored with two different sizes"),
    "bytes after the deflate stream": (
        lambda f, raw: _smuggled(f, "report.html", "bytes after the stream"),
        "'report.html': its compressed data is not one whole deflate stream"),
    "deflate stream without its final block": (
        lambda f, raw: _smuggled(f, "log.json", "no final block"),
        "'log.json': its compressed data is not one whole deflate stream"),
    "setuid mode": (lambda f, raw: _attributes(f, "report.html", 0o104777 << 16),
                    "'report.html' has header fields an export does not write"),
    "world-writable mode": (lambda f, raw: _attributes(f, "log.json", 0o100666 << 16),
                            "'log.json' has header fields an export does not write"),
    "duplicate entry (unsigned copy first)": (
        lambda f, raw: _with_entries(f, ("report.html", b"<h1>all fine</h1>"), first=True),
        "duplicate zip entry 'report.html'"),
    "absolute entry name": (lambda f, raw: _with_entries(f, ("/etc/cron.d/x", b"x")), "unsafe"),
    "parent directory entry name": (lambda f, raw: _with_entries(f, ("../x", b"x")), "unsafe"),
    "inner parent directory": (lambda f, raw: _with_entries(f, ("a/../../x", b"x")), "unsafe"),
    "drive letter": (lambda f, raw: _with_entries(f, ("C:/x", b"x")), "unsafe"),
    "backslash": (lambda f, raw: _with_entries(f, ("a\\..\\x", b"x")), "unsafe"),
    "directory entry with data": (
        lambda f, raw: _with_entries(f, ("identity/", b"x")), "is a directory, not a regular file"),
    "empty directory entry": (
        lambda f, raw: _with_entries(f, ("identity/", b"")), "is a directory, not a regular file"),
    "symbolic link": (lambda f, raw: _special(f, "log.json", stat.S_IFLNK | 0o777), "symbolic link"),
    "named pipe": (lambda f, raw: _special(f, "log.json", stat.S_IFIFO | 0o644), "special file"),
    "entry hidden before the central directory": (
        lambda f, raw: _hidden_entry(raw), "the zip central directory is at offset"),
    "script before the archive": (lambda f, raw: _SCRIPT + raw, "the zip end record is at offset"),
    "script before the archive, offsets counted from it": (
        lambda f, raw: _self_extracting(f), f"'records/records.jsonl' is at offset {len(_SCRIPT)}, not 0"),
    "archive comment": (lambda f, raw: _commented(raw), "ending in its end record"),
    "data after the end record": (
        lambda f, raw: raw + b"\n", "ending in its end record"),
    "zip64 end records": (lambda f, raw: _zip64(raw), "zip64"),
    "end record counts an entry less": (
        lambda f, raw: _count(raw, -1), "more entries than its end record counts"),
    "end record counts an entry more": (
        lambda f, raw: _count(raw, 1), "fewer entries than its end record counts"),
    "local header restates another CRC": (
        lambda f, raw: _local_crc(raw, "report.html"), "local header differs"),
    "data descriptors": (lambda f, raw: _streamed(f), "flags 0x0008"),
    "truncated archive": (lambda f, raw: raw[: len(raw) // 2], "zip archive"),
    "carriage return and ANSI escapes in a name": (
        lambda f, raw: _with_entries(f, ("x\r\x1b[2K\x1b[1Averdict  PASSED\x1b[8m", b"")),
        "non-printable character"),
    "bidi override in a name": (
        lambda f, raw: _with_entries(f, ("report\u202e.html", b"")), "non-printable character"),
    "member inflates 1000-fold": (lambda f, raw: _deflate_bomb(f), "inflates more than 100-fold"),
    "unicode path field renames an entry": (
        lambda f, raw: _unicode_path(f, "report.html", "../../escaped.html"), "extra fields"),
    "extra field in a local header only": (lambda f, raw: _local_extra(raw), "extra fields"),
    "member declares over 64 MiB": (
        lambda f, raw: _declare(raw, {"manifest.json": (65 << 20, 1 << 20)}),
        "'manifest.json' is larger than 64 MiB"),
    "members together declare over 256 MiB": (
        lambda f, raw: _declare(raw, dict.fromkeys(_policy_files(f, 5), (60 << 20, 1 << 20))),
        "exceed 256 MiB"),
    "members declare over 2 GiB": (
        lambda f, raw: _declare(raw, {"records/records.jsonl": (3 << 30, 64 << 20)}),
        "bundle is too large"),
}


def _cli(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    status = main(["evidence", "verify", str(path), *extra])  # raises if anything escapes
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_malformed_content_fails_the_named_check(bundle: bytes, case: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    mutate, check = FILE_CASES[case]
    data = rezip(mutate(unzip(bundle)))
    verdict = verify_bundle(data, allow_simulated=True)
    assert not verdict.ok and check in {c.name for c in verdict.failures}, verdict.table()
    (tmp_path / "bad.zip").write_bytes(data)
    status, out, _ = _cli(capsys, tmp_path / "bad.zip", "--allow-simulated")
    assert status == 1 and "verdict: FAILED" in out


@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_crafted_archive_is_not_a_bundle(bundle: bytes, case: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    build, phrase = ZIP_CASES[case]
    data = build(unzip(bundle), bundle)
    with pytest.raises(BundleInvalid) as info:
        verify_bundle(data, allow_simulated=True)
    assert phrase in str(info.value)
    (tmp_path / "bad.zip").write_bytes(data)
    status, out, err = _cli(capsys, tmp_path / "bad.zip", "--allow-simulated")
    assert status == 1 and out == "" and err.startswith("sealgate: bundle_invalid: ")
    assert err.removesuffix("\n").isprintable()  # names are shown escaped


@pytest.mark.parametrize(("mutate", "phrase"), [
    (lambda f: _first_record(f, envelope="\ud800"),
     "line 1: malformed record entry (envelope holds a lone surrogate, not Unicode text)"),
    (_long_first_line, "line 1: longer than 1 MiB"),
])
def test_a_bad_record_line_says_why_and_the_others_are_checked(
        bundle: bytes, mutate: Callable[[Files], Files], phrase: str) -> None:
    verdict = verify_bundle(rezip(mutate(unzip(bundle))), allow_simulated=True)
    failed = {c.name: c.detail for c in verdict.failures}
    assert failed["record signature"] == phrase, verdict.table()
    # the remaining lines were still proven: only the bad line is missing from the record set
    assert {"inclusion", "policy in force", "evidence binding"}.isdisjoint(failed)


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError("a verifier bug")


def test_a_check_that_raises_fails_by_name(bundle: bytes, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("proxy.evidence._verify.verify_identity", _raise)
    monkeypatch.setattr("proxy.evidence._verify._Verifier.check_policies", _raise)
    monkeypatch.setattr("proxy.evidence._verify_records.verify_receipt", _raise)
    verdict = verify_bundle(bundle, allow_simulated=True)
    failed = {c.name: c.detail for c in verdict.failures}
    crash = "unexpected ZeroDivisionError while checking: a verifier bug"
    assert failed["attestation"] == crash and failed["policy digest"] == crash
    assert failed["record signature"].startswith(f"line 1: {crash}; line 2: {crash}")
    # the checks that did not raise still ran and passed
    passed = {c.name for c in verdict.checks if c.ok}
    assert {"manifest signature", "file hashes", "checkpoint signature", "record set"} <= passed
    (tmp_path / "b.zip").write_bytes(bundle)
    status, out, _ = _cli(capsys, tmp_path / "b.zip", "--allow-simulated")
    assert status == 1 and crash in out and out.endswith("verdict: FAILED\n")


_FORGED = "x\r\x1b[2K\x1b[1Averdict: PASSED\x1b[8m\u202e\ud800\n"


def test_table_escapes_what_the_bundle_supplied() -> None:
    table = BundleVerdict((Check("file hash", False, _FORGED, _FORGED),)).table()
    lines = table.split("\n")
    assert len(lines) == 3 and all(line.isprintable() for line in lines)
    assert lines[1].endswith(r"x\r\x1b[2K\x1b[1Averdict: PASSED\x1b[8m\u202e\ud800\n")
    assert lines[2] == "verdict: FAILED"


def test_cli_escapes_names_the_manifest_lists(bundle: bytes, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    files = unzip(bundle)
    manifest = json.loads(files["manifest.json"])
    manifest["files"][_FORGED] = "00"
    path = tmp_path / "forged.zip"
    path.write_bytes(rezip({**files, "manifest.json": json.dumps(manifest).encode()}))
    status, out, _ = _cli(capsys, path, "--allow-simulated")
    assert status == 1 and all(line.isprintable() for line in out.splitlines())
    assert "file listed in the manifest is missing" in out and out.endswith("verdict: FAILED\n")
    status, out, _ = _cli(capsys, path, "--allow-simulated", "--json")
    assert any(c["file"] == _FORGED for c in json.loads(out)["checks"])


def _verified_with_peak(data: bytes) -> tuple[BundleVerdict, int]:
    """The verdict on ``data`` and the most memory Python held while reaching it."""
    tracemalloc.start()
    try:
        verdict = verify_bundle(data, allow_simulated=True)
        return verdict, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_records_are_read_in_bounded_memory(bundle: bytes) -> None:
    """records.jsonl is streamed line by line: 9 MiB of it never sits in memory at once."""
    rng = random.Random(0)
    junk = b"".join(rng.randbytes(3000).hex().encode() + b"\n" for _ in range(1500))
    verdict, peak = _verified_with_peak(rezip({**unzip(bundle), "records/records.jsonl": junk}))
    assert not verdict.ok and "record signature" in {c.name for c in verdict.failures}
    assert peak < len(junk) // 3, peak


def test_a_member_is_never_inflated_past_its_declared_size(bundle: bytes) -> None:
    """``ZipFile.read`` inflates a member's whole stream before cutting it to the declared
    size: 256 MiB here, for a member declared as 1,000 bytes. Read by pieces, it is refused
    once it passes that size, in little memory."""
    data = _lying_bomb(unzip(bundle))
    tracemalloc.start()
    try:
        with pytest.raises(BundleInvalid) as info:
            verify_bundle(data, allow_simulated=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "'report.html' holds more than its declared size" in str(info.value)
    assert peak < 32 << 20, peak


def _many_entries(count: int) -> bytes:
    """One local entry, and ``count`` central directory entries of a few bytes each: the end
    record counts at most 65,535, zipfile reads what the central directory holds."""
    local = _local_header(b"a", b"")
    directory = b"".join(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, 0, 0,
                                     len(name), 0, 0, 0, 0, 0, 0) + name
                         for name in (b"%x" % i for i in range(count)))
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                      len(directory), len(local), 0)
    return local + directory + end


def test_a_large_central_directory_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """18 MiB of central directory (370,000 entries, several hundred MiB as zipfile objects)
    is refused from its end record, in a few KiB."""
    path = tmp_path / "many.zip"
    path.write_bytes(_many_entries(370_000))
    tracemalloc.start()
    try:
        with pytest.raises(BundleInvalid) as info:
            verify_bundle(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "the zip central directory is larger than 16 MiB" in str(info.value)
    assert peak < 1 << 20, peak


def test_the_bundle_file_itself_is_capped(bundle: bytes, tmp_path: Path) -> None:
    """A bundle after 2 GiB of anything (a sparse file here) is refused from its size."""
    path = tmp_path / "large.zip"
    with path.open("wb") as out:
        out.seek(2 << 30)
        out.write(bundle)
    with pytest.raises(BundleInvalid) as info:
        verify_bundle(path, allow_simulated=True)
    assert "the bundle file is larger than 2 GiB" in str(info.value)


def _policy_index(files: Files, entries: list[dict[str, Any]], *extra: str) -> bytes:
    return rezip({**files, **dict.fromkeys(extra, b""),
                  "policies/index.json": json.dumps(entries).encode()})


def test_policy_index_entries_are_capped(bundle: bytes) -> None:
    entries = [{"digest": f"sha256:{i:064x}", "files": []} for i in range(65_536)]
    verdict = verify_bundle(_policy_index(unzip(bundle), entries), allow_simulated=True)
    failed = [c for c in verdict.failures if c.name == "policy digest"]
    assert [c.detail for c in failed] == [
        "missing or malformed policy index: policy index lists more than 65,535 policies"]


def test_policy_digests_are_checked_in_linear_time(bundle: bytes) -> None:
    """Each policy's files are found by their folder, not by a pass over every file: 30,000
    policies beside 30,000 other files take a few seconds; a pass over the files per policy
    took about 10 s for 12,000 of each, and over a minute for these (a bound no loaded machine
    reaches, which no quadratic pass stays under)."""
    count = 30_000
    entries = [{"digest": f"sha256:{i:064x}", "files": []} for i in range(count)]
    data = _policy_index(unzip(bundle), entries, *(f"other/{i}" for i in range(count)))
    began = time.monotonic()
    verdict = verify_bundle(data, allow_simulated=True)
    assert time.monotonic() - began < 30
    failed = [c for c in verdict.failures if c.name == "policy digest"]
    assert len(failed) == count


def test_a_policy_listed_twice_fails(bundle: bytes) -> None:
    files = unzip(bundle)
    index = json.loads(files["policies/index.json"])
    verdict = verify_bundle(_policy_index(files, index + index), allow_simulated=True)
    policy = [(c.ok, c.detail) for c in verdict.checks if c.name == "policy digest"]
    assert policy[len(index):] == [(False, "policy listed twice in the index")] * len(index)
    assert all(ok for ok, _ in policy[:len(index)])


def test_an_export_the_verifier_would_refuse_is_not_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.evidence._export.MAX_ENTRIES", 2)
    zipped = _Zip(io.BytesIO())
    with zipped.zf:
        zipped.add("log.json", b"{}")
        with zipped.stream("records/records.jsonl") as write:
            write(b"")
        with pytest.raises(ExportFailed) as info:
            zipped.add("report.html", b"")
    assert "more than 2 files" in str(info.value)


def test_cli_prints_no_traceback(traffic: Traffic, bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(rezip(_first_record(unzip(bundle), inclusion=None)))
    result = traffic.gateway.cli("evidence", "verify", str(path), "--allow-simulated")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "verdict: FAILED" in result.stdout


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    children = (value.items() if isinstance(value, dict)
                else enumerate(value) if isinstance(value, list) else ())
    return [prefix] + [p for key, child in children for p in _paths(child, (*prefix, key))]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return copy


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_signed_manifests_never_crash(bundle: bytes, log_key: Ed25519PrivateKey,
                                              data: st.DataObject) -> None:
    files = unzip(bundle)
    manifest = json.loads(files["manifest.json"])
    path = data.draw(st.sampled_from([p for p in _paths(manifest) if p[:1] != ("files",)]))
    mutated = _resign(files, log_key, _replace(manifest, path, data.draw(_JSON)))
    try:
        verdict = verify_bundle(rezip(mutated), allow_simulated=True)
    except BundleInvalid:
        return
    assert verdict.checks


def test_simulated_evidence_needs_the_verifiers_consent(traffic: Traffic, bundle: bytes,
                                                        log_key: Ed25519PrivateKey,
                                                        tmp_path: Path) -> None:
    files = unzip(bundle)
    # The bundle's own word is not consent: a forger controls the manifest.
    forged = _resign(files, log_key, {**json.loads(files["manifest.json"]), "simulated": True})
    for data in (bundle, rezip(forged)):
        verdict = verify_bundle(data)
        assert not verdict.ok and not verdict.insecure
        attestation = [c for c in verdict.failures if c.name == "attestation"]
        assert attestation and "simulated evidence" in attestation[0].detail
        assert verify_bundle(data, allow_simulated=True).ok
    path = tmp_path / "forged.zip"
    path.write_bytes(rezip(forged))
    result = traffic.gateway.cli("evidence", "verify", str(path), "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 1 and doc["ok"] is False and doc["insecure"] is False


def test_no_bit_of_the_zip_structure_escapes_the_checks(bundle: bytes) -> None:
    """Bit 0 of every byte of every local header, the central directory and the end record,
    flipped in turn: each flip fails verification, by refusal or by a failed check (versions,
    times and attributes included: unzip tools honour what they say, a setuid bit among them)."""
    structure: list[int] = []
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        for info in zf.infolist():
            start = info.header_offset
            structure += range(start, start + 30 + len(info.filename.encode()))
    structure += range(int.from_bytes(bundle[-6:-2], "little"), len(bundle))
    escaped = []
    for at in structure:
        flipped = bytearray(bundle)
        flipped[at] ^= 0x01
        try:
            ok = verify_bundle(bytes(flipped), allow_simulated=True).ok
        except BundleInvalid:
            ok = False
        if ok:
            escaped.append(at)
    assert escaped == [], escaped


def test_a_member_whose_last_bytes_inflate_past_one_piece_is_read_whole() -> None:
    """Members are inflated a MiB at a time. When a piece fills up just as the last compressed
    bytes are taken in, zlib holds the rest back (and says the stream ended): the member read
    short, and a sound one was refused. Here one MiB and 7 bytes of zeros, deflated (a member
    the 100-fold cap would refuse first, so it is read at the step that inflates)."""
    from proxy.evidence._archive import _LOCAL, _Entry, _member

    member = bytes((1 << 20) + 7)
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
    stored = squeeze.compress(member) + squeeze.flush()
    name = b"report.html"
    entry = _Entry("report.html", name, b"", MADE_BY, 20, 0, zipfile.ZIP_DEFLATED, 0, 33,
                   zlib.crc32(member), len(stored), len(member), 0, 0, 0, 0, ATTRIBUTES, 0)
    fp = io.BytesIO(bytes(_LOCAL.size) + name + stored)
    assert b"".join(_member(fp, entry)) == member
