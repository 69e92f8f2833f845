"""``sealgate attest`` through proxy.cli.main, including a live identity over loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from litestar import Litestar
from litestar.di import Provide

from proxy.attestation import IdentityService, SimulatedProvider, identity_handlers
from proxy.cli import main
from tests.conftest import vector_path

M = "d4" * 48


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["attest", *argv])
    return status, capsys.readouterr().out


def _snp_dir(tmp_path: Path, vcek: str) -> Path:
    for name in (vcek, "ask_ark_milan.pem"):
        shutil.copy(vector_path("sev-snp", name), tmp_path / name)
    return tmp_path


def test_verify_snp_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collateral = _snp_dir(tmp_path, "virtee-sev_vcek_milan.der")
    report = vector_path("sev-snp", "virtee-sev_report_milan.bin")
    args = ["verify", "--evidence", str(report), "--collateral", str(collateral),
            "--at", "2025-06-01T00:00:00+00:00"]
    status, out = _run(capsys, *args)
    assert status == 1 and "✗ measurement_not_allowed: no measurement allowlist" in out
    status, out = _run(capsys, *args, "--allow-any-measurement")
    assert status == 0, out
    assert "✓ report signature (ECDSA P-384) by the VCEK" in out and "VERIFIED" in out
    assert "! no measurement allowlist" in out


def test_verify_snp_debug_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collateral = _snp_dir(tmp_path, "go-sev-guest_vcek.der")
    report = vector_path("sev-snp", "go-sev-guest_attestation.bin")
    status, out = _run(capsys, "verify", "--evidence", str(report), "--platform", "sev-snp",
                       "--collateral", str(collateral), "--at", "2025-06-01")
    assert status == 1
    assert "✗ debug_enabled" in out and "FAILED" in out


def test_verify_tdx_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quote = vector_path("tdx", "go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"allowed_tcb_statuses": ["TcbNotSupported", "UpToDate"],
                                  "allow_any_measurement": True}))
    args = ["verify", "--evidence", str(quote), "--collateral", str(quote.parent),
            "--policy", str(policy), "--json"]
    status, out = _run(capsys, *args, "--at", "2023-06-20T00:00:00Z")
    verdict = json.loads(out)
    assert status == 0 and verdict["ok"] and verdict["tcb_status"] == "TcbNotSupported"
    status, out = _run(capsys, *args)
    assert status == 1 and json.loads(out)["error"]["code"] == "collateral_expired"


def test_verify_nvidia(capsys: pytest.CaptureFixture[str]) -> None:
    report = vector_path("nvidia-gpu", "nvtrust_hopperAttestationReport.txt")
    status, out = _run(capsys, "verify", "--evidence", str(report), "--collateral",
                       str(report.parent), "--json")
    assert status == 0 and json.loads(out)["claims"]["driver_version"] == "550.90.07"


@pytest.mark.parametrize("text", ["11e0zz not hex\n", "11e0\xff\n"])
def test_verify_malformed_nvidia_hex(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     text: str) -> None:
    path = tmp_path / "gpu.txt"
    path.write_bytes(text.encode("latin-1"))
    status, out = _run(capsys, "verify", "--evidence", str(path))
    assert status == 1 and "✗ report_malformed" in out and "FAILED" in out


def _service() -> IdentityService:
    return IdentityService(SimulatedProvider(M), lambda: b"\x01k", bytes(32),
                           lambda: "sha256:11", M)


def test_verify_identity_document_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "identity.json"
    path.write_text(json.dumps(asyncio.run(_service().document())))
    status, out = _run(capsys, "verify", "--evidence", str(path))
    assert status == 1 and "✗ simulated_not_allowed" in out
    status, out = _run(capsys, "verify", "--evidence", str(path), "--allow-simulated")
    assert status == 0 and "! INSECURE" in out


@pytest.fixture
def server() -> Iterator[str]:
    service = _service()
    app = Litestar(route_handlers=identity_handlers,
                   dependencies={"identity_service": Provide(lambda: service,
                                                             sync_to_thread=False)})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def test_identity_live(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _run(capsys, "identity", server, "--allow-simulated", "--json")
    verdict = json.loads(out)
    assert status == 0 and verdict["measurement"] == M and verdict["simulated"]
    assert "identity document fetched with a fresh 32-byte nonce" in verdict["checks"]
    status, out = _run(capsys, "identity", server)
    assert status == 1 and "✗ simulated_not_allowed" in out


def test_identity_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, out = _run(capsys, "identity", f"http://127.0.0.1:{port}")
    assert status == 1 and "✗ fetch_failed" in out
