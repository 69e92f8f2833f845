"""The other evidence providers and `detect_provider`.

``sev-guest`` uses the SNP_GET_REPORT ioctl of ``/dev/sev-guest`` (linux/sev-guest.h); it is a
best-effort fallback for kernels without configfs-tsm and is not exercised without hardware.
The ioctl returns no certificates, so the VCEK/VLEK and ASK/ARK come from a configured folder
(``sev_guest_certs``); without them nobody, the gateway's own start-up check included, can
verify its evidence.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from ._collateral import Collateral
from ._configfs import DEFAULT_TSM_PATH, ConfigfsTsmProvider
from ._errors import VerificationError
from ._evidence import Evidence, EvidenceProvider
from ._nvidia import gpu_nonce
from ._simulated import SimulatedProvider
from ._snp_report import REPORT_SIZE

__all__ = ["GpuCollector", "NvidiaGpuProvider", "SevGuestProvider", "detect_provider"]

DEFAULT_SEV_GUEST = Path("/dev/sev-guest")
# linux/sev-guest.h: SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl[32 bytes])
SNP_GET_REPORT = (3 << 30) | (32 << 16) | (ord("S") << 8)
_RESPONSE_SIZE = 4000
_REPORT_OFFSET = 32  # MSG_REPORT_RSP: status u32, report_size u32, reserved[24], report

GpuCollector = Callable[[bytes], Awaitable[tuple[bytes, bytes]]]
"""Given the 32-byte SPDM nonce, return ``(request ‖ response, PEM chain)`` from a CC GPU."""


class SevGuestProvider(EvidenceProvider):
    """SEV-SNP report through the ``/dev/sev-guest`` ioctl, with certificates given here.

    ``certificates`` (PEM: VCEK or VLEK, ASK/ASVK, ARK) are attached to every report, as the
    configfs-tsm provider attaches the host's certificate table.
    """

    platform = "sev-snp"
    name = "sev-guest"

    def __init__(self, device: Path = DEFAULT_SEV_GUEST, certificates: bytes = b"") -> None:
        self._device = device
        self._certificates = certificates

    async def evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise VerificationError("evidence_unavailable", "REPORT_DATA must be 64 bytes")
        report = await asyncio.to_thread(self._ioctl, report_data)
        return Evidence(platform=self.platform, report=report, certificates=self._certificates,
                        provider=self.name)

    def _ioctl(self, report_data: bytes) -> bytes:
        request = ctypes.create_string_buffer(report_data + bytes(32), 96)  # vmpl 0, reserved
        response = ctypes.create_string_buffer(_RESPONSE_SIZE)
        arg = bytearray(struct.pack("<B7xQQQ", 1, ctypes.addressof(request),
                                    ctypes.addressof(response), 0))
        try:
            fd = os.open(self._device, os.O_RDWR)
            try:
                fcntl.ioctl(fd, SNP_GET_REPORT, arg, True)
            finally:
                os.close(fd)
        except OSError as exc:
            raise VerificationError("evidence_unavailable", "SNP_GET_REPORT failed") from exc
        status, size = struct.unpack_from("<II", response.raw, 0)
        if status != 0 or size != REPORT_SIZE:
            raise VerificationError("evidence_unavailable", f"SNP firmware status {status}")
        return response.raw[_REPORT_OFFSET : _REPORT_OFFSET + REPORT_SIZE]


class NvidiaGpuProvider(EvidenceProvider):
    """GPU evidence from a pluggable collector, bound to the CPU REPORT_DATA by the nonce."""

    platform = "nvidia"
    name = "nvidia"

    def __init__(self, collector: GpuCollector) -> None:
        self._collector = collector

    async def evidence(self, report_data: bytes) -> Evidence:
        report, chain = await self._collector(gpu_nonce(report_data))
        return Evidence(platform=self.platform, report=report, certificates=chain,
                        provider=self.name)


class ProviderSettings(Protocol):
    """The settings `detect_provider` reads (``proxy.config.Settings`` has them)."""

    evidence_provider: str
    release_measurement: str
    deployment_mode: str


def _sev_guest_certs(folder: str) -> bytes:
    """The certificates in ``folder`` as one PEM bundle (empty when no folder is set)."""
    if not folder:
        return b""
    try:
        return Collateral.from_dir(folder).certificates
    except OSError as exc:
        raise VerificationError("no_evidence_provider", f"cannot read {folder}") from exc


def detect_provider(config: ProviderSettings | Any) -> EvidenceProvider:
    """The configured provider, else configfs-tsm, else ``/dev/sev-guest``, else an error.

    ``simulated`` is used only when named explicitly, and never in production.
    """
    name = (config.evidence_provider or "auto").strip()
    tsm = Path(getattr(config, "tsm_path", DEFAULT_TSM_PATH))
    device = Path(getattr(config, "sev_guest_device", DEFAULT_SEV_GUEST))
    if name == "simulated":
        if config.deployment_mode == "production":
            raise VerificationError("simulated_not_allowed", "simulated evidence in production")
        return SimulatedProvider(config.release_measurement or "simulated")
    if name == "configfs-tsm" or (name == "auto" and tsm.is_dir()):
        if not tsm.is_dir():
            raise VerificationError("no_evidence_provider", f"{tsm} is not present")
        return ConfigfsTsmProvider(tsm)
    if name == "sev-guest" or (name == "auto" and device.exists()):
        return SevGuestProvider(device, _sev_guest_certs(getattr(config, "sev_guest_certs", "")))
    if name == "auto":
        raise VerificationError("no_evidence_provider", "no configfs-tsm or /dev/sev-guest found")
    raise VerificationError("no_evidence_provider", f"unknown evidence provider {name!r}")
