"""configfs-tsm provider against a temp-dir tree whose kernel side is played by a fake."""

from __future__ import annotations

import asyncio
import functools
import struct
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from proxy import enclave
from proxy.attestation import (
    ConfigfsIO,
    ConfigfsTsmProvider,
    IdentityService,
    SevGuestProvider,
    SimulatedProvider,
    VerificationError,
    detect_provider,
    verify_evidence,
)
from proxy.attestation._x509 import load_certificates
from tests.attestation._support import SNP_AT, TDX_V4_AT, SnpForge, snp_case
from tests.conftest import vector_path

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")


def cert_table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    """GHCB certificate table: (GUID, offset, length) entries, a zero entry, then the certs."""
    header_size = 24 * (len(entries) + 1)
    header, body = b"", b""
    for guid, der in entries:
        header += struct.pack("<16sII", guid.bytes_le, header_size + len(body), len(der))
        body += der
    return header + bytes(24) + body


class FakeConfigfsTsm(ConfigfsIO):
    """Plays the kernel side of configfs-tsm in a temp dir; can inject races and faults."""

    def __init__(self, provider: str, outblob: bytes, auxblob: bytes = b"",
                 race: int = 0, fail_outblob: bool = False, fail_read: str = "") -> None:
        self.provider, self.outblob, self.auxblob = provider, outblob, auxblob
        self.race, self.fail_outblob = race, fail_outblob
        self.fail_read = "outblob" if fail_outblob else fail_read  # a blob whose read fails
        self.inblobs: list[bytes] = []

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        for name in ("inblob", "outblob", "auxblob"):
            (path / name).write_bytes(b"")

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        entry = path.parent
        generation = int((entry / "generation").read_text()) + 1
        if self.race > 0:  # another writer bumps generation behind our back
            self.race -= 1
            generation += 1
        (entry / "generation").write_text(f"{generation}\n")
        self.inblobs.append((entry / "inblob").read_bytes())
        if not self.fail_outblob:
            (entry / "outblob").write_bytes(self.outblob)
            (entry / "auxblob").write_bytes(self.auxblob)

    def read(self, path: Path) -> bytes | None:
        if path.name == self.fail_read:
            raise OSError(5, "Input/output error")
        return super().read(path)

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)


def _der(name: str) -> bytes:
    return vector_path("sev-snp", name).read_bytes()


def _snp_fake(**kw: object) -> FakeConfigfsTsm:
    chain = load_certificates(_der("ask_ark_milan.pem"), "chain")
    aux = cert_table([(VCEK_GUID, _der("virtee-sev_vcek_milan.der")),
                      (ASK_GUID, chain[0].public_bytes(Encoding.DER)),
                      (ARK_GUID, chain[1].public_bytes(Encoding.DER))])
    return FakeConfigfsTsm("sev_guest", _der("virtee-sev_report_milan.bin"), aux, **kw)  # type: ignore[arg-type]


def test_snp_evidence_through_configfs(tmp_path: Path) -> None:
    fake = _snp_fake()
    provider = ConfigfsTsmProvider(tmp_path, io=fake)
    report_data = bytes(range(64))
    evidence = asyncio.run(provider.evidence(report_data))
    assert fake.inblobs == [report_data]
    assert evidence.platform == "sev-snp" and provider.platform == "sev-snp"
    assert evidence.provider == "configfs-tsm"
    assert list(tmp_path.iterdir()) == []  # entry removed
    verdict = verify_evidence(evidence, at=SNP_AT)
    assert verdict.claims["product"] == "Milan"


def test_tdx_evidence_through_configfs(tmp_path: Path) -> None:
    quote = vector_path("tdx", "go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat").read_bytes()
    provider = ConfigfsTsmProvider(tmp_path, io=FakeConfigfsTsm("tdx_guest", quote))
    evidence = asyncio.run(provider.evidence(bytes(64)))
    assert evidence.platform == "tdx" and evidence.certificates == b""
    assert verify_evidence(evidence, at=TDX_V4_AT).platform == "tdx"


def test_generation_race_retries_then_fails(tmp_path: Path) -> None:
    fake = _snp_fake(race=1)
    evidence = asyncio.run(ConfigfsTsmProvider(tmp_path, io=fake).evidence(bytes(64)))
    assert len(fake.inblobs) == 2 and evidence.platform == "sev-snp"
    with pytest.raises(VerificationError) as info:
        asyncio.run(ConfigfsTsmProvider(tmp_path, io=_snp_fake(race=10)).evidence(bytes(64)))
    assert info.value.code == "evidence_race"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fault", [{"fail_outblob": True}, {"fail_read": "auxblob"}])
def test_blob_read_failures_are_evidence_unavailable(tmp_path: Path, fault: dict[str, Any]) -> None:
    """An I/O error reading either blob is the provider's own error (a 503), never a raw
    OSError (a 500, and a start-up failing as an internal error)."""
    with pytest.raises(VerificationError) as info:
        asyncio.run(ConfigfsTsmProvider(tmp_path, io=_snp_fake(**fault)).evidence(bytes(64)))
    assert info.value.code == "evidence_unavailable"


def test_unknown_provider_and_bad_input(tmp_path: Path) -> None:
    provider = ConfigfsTsmProvider(tmp_path, io=FakeConfigfsTsm("arm_cca", b"x"))
    with pytest.raises(VerificationError) as info:
        asyncio.run(provider.evidence(bytes(64)))
    assert info.value.code == "evidence_unavailable"
    with pytest.raises(VerificationError):
        asyncio.run(provider.evidence(bytes(32)))


def test_missing_tree(tmp_path: Path) -> None:
    provider = ConfigfsTsmProvider(tmp_path / "absent")
    with pytest.raises(VerificationError) as info:
        asyncio.run(provider.evidence(bytes(64)))
    assert info.value.code == "evidence_unavailable"


def _settings(name: str, mode: str = "development", **extra: object) -> SimpleNamespace:
    return SimpleNamespace(evidence_provider=name, release_measurement="m1",
                           deployment_mode=mode, **extra)


def test_detect_provider(tmp_path: Path) -> None:
    assert isinstance(detect_provider(_settings("simulated")), SimulatedProvider)
    with pytest.raises(VerificationError) as info:
        detect_provider(_settings("simulated", "production"))
    assert info.value.code == "simulated_not_allowed"
    found = detect_provider(_settings("auto", tsm_path=tmp_path))
    assert isinstance(found, ConfigfsTsmProvider)
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    absent = tmp_path / "none"
    assert isinstance(detect_provider(_settings("auto", tsm_path=absent, sev_guest_device=device)),
                      SevGuestProvider)
    with pytest.raises(VerificationError) as info:
        detect_provider(_settings("auto", tsm_path=absent, sev_guest_device=absent))
    assert info.value.code == "no_evidence_provider"
    with pytest.raises(VerificationError) as info:
        detect_provider(_settings("configfs-tsm", tsm_path=absent))
    assert info.value.code == "no_evidence_provider"


def _sev_guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: str,
               forge: SnpForge) -> IdentityService:
    """``sev-guest`` chosen by settings, its ioctl played by a fake returning a real report
    that carries the requested REPORT_DATA, re-signed under the forge's VCEK."""
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    provider = detect_provider(_settings("sev-guest", sev_guest_device=device,
                                         sev_guest_certs=certs))
    assert isinstance(provider, SevGuestProvider)

    def ioctl(report_data: bytes) -> bytes:
        return forge.sign(forge.report[:0x50] + report_data + forge.report[0x90:])

    monkeypatch.setattr(provider, "_ioctl", ioctl)
    monkeypatch.setattr(enclave, "verify_evidence", functools.partial(verify_evidence, at=SNP_AT))
    measurement = forge.report[0x90:0xC0].hex()
    return IdentityService(provider, lambda: b"\x01k", bytes(32), lambda: "sha256:11",
                           measurement)


def test_sev_guest_start_up_self_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the configured VCEK and ASK/ARK attached, the gateway can verify its own report."""
    forge = SnpForge(monkeypatch, snp_case("virtee-sev_report_milan.bin"))
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "chain.pem").write_bytes(forge.certs())
    facts = asyncio.run(enclave.enclave_facts(_sev_guest(tmp_path, monkeypatch, str(folder),
                                                         forge)))
    assert facts.platform == "sev-snp" and not facts.simulated


def test_sev_guest_without_certificates_fails_closed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VerificationError) as info:
        forge = SnpForge(monkeypatch, snp_case("virtee-sev_report_milan.bin"))
        asyncio.run(enclave.enclave_facts(_sev_guest(tmp_path, monkeypatch, "", forge)))
    assert info.value.code == "cert_chain_invalid"
    with pytest.raises(VerificationError) as info:
        detect_provider(_settings("sev-guest", sev_guest_certs=str(tmp_path / "absent")))
    assert info.value.code == "no_evidence_provider"
