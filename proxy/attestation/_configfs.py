"""Evidence through Linux configfs-tsm (Documentation/ABI/testing/configfs-tsm).

One report: ``mkdir $root/<entry>``; write 64 bytes to ``inblob``; read ``outblob`` and ``auxblob``;
``generation`` must have grown by exactly one across the write (otherwise another writer
raced us: retry); ``rmdir``. ``provider`` names the backend: ``sev_guest`` or ``tdx_guest``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from ._errors import VerificationError
from ._evidence import Evidence, EvidenceProvider
from ._x509 import load_certificate

__all__ = ["DEFAULT_TSM_PATH", "ConfigfsIO", "ConfigfsTsmProvider", "parse_snp_cert_table"]

DEFAULT_TSM_PATH = Path("/sys/kernel/config/tsm/report")
_PLATFORMS = {"sev_guest": "sev-snp", "tdx_guest": "tdx"}
_ATTEMPTS = 3
# GHCB spec §4.1.8.1 (SNP extended guest request): certificate table GUIDs, signing key first.
_CERT_GUIDS = (
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"),  # VCEK
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"),  # VLEK
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"),  # ASK / ASVK
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"),  # ARK
)


def parse_snp_cert_table(table: bytes) -> bytes:
    """Turn an SNP certificate table (GUID, offset, length entries) into a PEM bundle."""
    found: dict[uuid.UUID, bytes] = {}
    for pos in range(0, len(table) - 23, 24):
        raw_guid, offset, length = struct.unpack_from("<16sII", table, pos)
        if not any(raw_guid) and offset == 0 and length == 0:
            break
        if offset + length > len(table):
            raise VerificationError("evidence_unavailable", "SNP certificate table is truncated")
        found[uuid.UUID(bytes_le=raw_guid)] = table[offset : offset + length]
    pems = []
    for guid in _CERT_GUIDS:
        if guid in found:
            cert = load_certificate(found[guid].rstrip(b"\x00"), "SNP certificate table")
            pems.append(cert.public_bytes(Encoding.PEM))
    return b"".join(pems)


class ConfigfsIO:
    """The file operations the provider performs (a seam for fault injection in tests)."""

    def mkdir(self, path: Path) -> None:
        path.mkdir()

    def rmdir(self, path: Path) -> None:
        path.rmdir()

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


class ConfigfsTsmProvider(EvidenceProvider):
    """SEV-SNP or TDX evidence through configfs-tsm; the platform comes from ``provider``."""

    name = "configfs-tsm"

    def __init__(self, root: Path = DEFAULT_TSM_PATH, *, io: ConfigfsIO | None = None) -> None:
        self._root = root
        self._io = io or ConfigfsIO()
        self.platform = "unknown"

    async def evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise VerificationError("evidence_unavailable", "REPORT_DATA must be 64 bytes")
        return await asyncio.to_thread(self._collect, report_data)

    def _collect(self, report_data: bytes) -> Evidence:
        for _ in range(_ATTEMPTS):
            entry = self._root / f"sealgate-{secrets.token_hex(8)}"
            try:
                self._io.mkdir(entry)
            except OSError as exc:
                raise VerificationError("evidence_unavailable", "cannot create a report") from exc
            try:
                result = self._once(entry, report_data)
            finally:
                self._remove(entry)
            if result is not None:
                return result
        raise VerificationError("evidence_race", "report generation kept changing underneath us")

    def _remove(self, entry: Path) -> None:
        try:
            self._io.rmdir(entry)
        except OSError as exc:
            raise VerificationError("evidence_unavailable", "cannot remove a report") from exc

    def _read(self, path: Path) -> bytes:
        try:
            data = self._io.read(path)
        except OSError as exc:
            raise VerificationError("evidence_unavailable", f"cannot read {path.name}") from exc
        if data is None:
            raise VerificationError("evidence_unavailable", f"{path.name} is missing")
        return data

    def _generation(self, entry: Path) -> int:
        try:
            return int(self._read(entry / "generation").strip())
        except ValueError as exc:
            raise VerificationError("evidence_unavailable", "bad generation value") from exc

    def _once(self, entry: Path, report_data: bytes) -> Evidence | None:
        name = self._read(entry / "provider").decode("ascii", "replace").strip()
        platform = _PLATFORMS.get(name)
        if platform is None:
            raise VerificationError("evidence_unavailable", "unsupported configfs-tsm provider")
        before = self._generation(entry)
        try:
            self._io.write(entry / "inblob", report_data)
        except OSError as exc:
            raise VerificationError("evidence_unavailable", "cannot write inblob") from exc
        report = self._read(entry / "outblob")
        try:  # optional: absent on platforms without certificates to add
            aux = self._io.read(entry / "auxblob") or b""
        except OSError as exc:
            raise VerificationError("evidence_unavailable", "cannot read auxblob") from exc
        # Our write bumps generation by exactly one; anything else means another writer.
        if self._generation(entry) != before + 1:
            return None
        self.platform = platform
        certs = parse_snp_cert_table(aux) if platform == "sev-snp" and aux else b""
        return Evidence(platform=platform, report=report, certificates=certs, provider=self.name)
