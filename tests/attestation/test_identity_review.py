"""Gateway-side identity and keys: key id exhaustion, configfs-tsm faults, the start-up
self-check, and the kept identity state after a retired key's grace period ends."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from policy._bundle import default_bundle_dir
from proxy import enclave
from proxy.attestation import (
    ConfigfsIO,
    ConfigfsTsmProvider,
    Evidence,
    IdentityService,
    SimulatedProvider,
    VerificationError,
    identity_handlers,
)
from proxy.gateway import KeyManager
from proxy.ohttp import decode_key_configs

PATH = "/.well-known/sealgate/identity"


def test_rotating_faster_than_the_grace_period_never_runs_out_of_key_ids() -> None:
    """256 rotations inside one grace period used to leave no free key_id: rotate() raised
    and the maintenance loop stopped rotating until the oldest keys expired."""
    keys = KeyManager(grace_period=1e9)
    ids = [keys.current_key_id] + [keys.rotate() for _ in range(600)]
    configs = list(decode_key_configs(keys.key_configs()))
    assert len(configs) == 256 and configs[0].key_id == keys.current_key_id
    assert len({c.key_id for c in configs}) == 256
    assert all(keys.lookup(key_id) is not None for key_id in ids[-256:])


class FaultInjectingConfigfs(ConfigfsIO):
    """A configfs-tsm tree whose ``provider`` reads as junk or whose ``rmdir`` fails."""

    def __init__(self, provider: bytes = b"sev_guest\n", rmdir_fails: bool = False) -> None:
        self.provider, self.rmdir_fails = provider, rmdir_fails

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        (path / "provider").write_bytes(self.provider)
        (path / "generation").write_text("0\n")
        for name in ("inblob", "outblob", "auxblob"):
            (path / name).write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        if self.rmdir_fails:
            raise OSError(16, "Device or resource busy")
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)


@pytest.mark.parametrize("io", [FaultInjectingConfigfs(provider=b"\xff\xfe\n"),
                                FaultInjectingConfigfs(rmdir_fails=True)],
                         ids=["provider_not_text", "rmdir_fails"])
def test_configfs_faults_are_evidence_unavailable_not_500(tmp_path: Path,
                                                          io: FaultInjectingConfigfs) -> None:
    provider = ConfigfsTsmProvider(tmp_path, io=io)
    with pytest.raises(VerificationError) as info:
        asyncio.run(provider.evidence(bytes(64)))
    assert info.value.code == "evidence_unavailable"
    service = IdentityService(provider, lambda: b"\x01k", bytes(32), lambda: "sha256:00", "m")
    app = Litestar(route_handlers=identity_handlers, dependencies={
        "identity_service": Provide(lambda: service, sync_to_thread=False)})
    with TestClient(app) as client:
        response = client.get(PATH)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "evidence_unavailable"


class FaultInjectingUnboundProvider(SimulatedProvider):
    """Evidence that does not carry the REPORT_DATA it was asked for."""

    async def evidence(self, report_data: bytes) -> Evidence:
        return await super().evidence(bytes(64))


@pytest.mark.parametrize(("provider", "measurement", "code"), [
    (FaultInjectingUnboundProvider("m1"), "m1", "report_data_mismatch"),
    (SimulatedProvider("the-booted-image"), "a-mistyped-release", "measurement_mismatch"),
], ids=["unbound_report_data", "release_measurement_differs"])
def test_start_up_self_check_refuses_what_every_client_refuses(
        provider: SimulatedProvider, measurement: str, code: str) -> None:
    service = IdentityService(provider, lambda: b"\x01k", bytes(32), lambda: "sha256:11",
                              measurement)
    with pytest.raises(VerificationError) as info:
        asyncio.run(enclave.enclave_facts(service))
    assert info.value.code == code


def test_document_served_after_a_grace_period_ends_is_kept_and_cited(tmp_path: Path) -> None:
    """When a retired key expires the key configs, and so the served document, change; the
    kept identity state and the records' evidence digest must follow, not wait for the next
    rotation (a day by default)."""
    from proxy.app import create_app
    from proxy.config import Settings
    from proxy.evidence import identity_documents
    from proxy.evidence._state import document_bytes

    shutil.copytree(default_bundle_dir(), tmp_path / "bundle")
    settings = Settings.load(env={"SEALGATE_DATA_DIR": str(tmp_path / "data")}).replace(
        backends={}, models={}, ohttp_key_rotation_s=0, policy_bundle=str(tmp_path / "bundle"),
        policy_reload_s=1)
    app = create_app(settings)
    services = app.state["services"]
    now = [0.0]
    services.ohttp_keys._clock = lambda: now[0]  # fake clock: the grace period ends on demand
    services.ohttp_keys.rotate()  # a rotation before this start; the old key is in its grace
    with TestClient(app) as client:
        before = client.get(PATH).json()
        now[0] = 1e6  # the retired key's grace period is over
        served = client.get(PATH).json()
        assert served["key_configs"] != before["key_configs"]
        name = hashlib.sha256(document_bytes(served)).hexdigest() + ".json"
        digest = Evidence.from_json(served["evidence"]).digest()
        deadline = time.monotonic() + 10
        while (name not in identity_documents(tmp_path / "data")
               or services.gate.enclave.evidence_digest != digest):
            assert time.monotonic() < deadline, "the served document was never kept"
            time.sleep(0.1)
