"""kill -9 mid-load: reopening integrates every committed record and stays consistent."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from audit import (
    AuditLog,
    LogStore,
    SignedCheckpoint,
    load_or_create_signing_key,
    verify_consistency,
    verify_log,
)
from tests.audit.conftest import ORIGIN

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio


def _run_child_until_killed(url: str, key_file: Path, checkpoints: int) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.crash_child", url, str(key_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    notes: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("CP "):
                notes.append(base64.b64decode(line[3:]).decode())
            if len(notes) >= checkpoints:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stderr is not None
        stderr = child.stderr.read()
    assert child.returncode == -signal.SIGKILL, stderr
    return notes


async def test_sigkill_mid_load_recovers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    key_file = tmp_path / "audit-log.key"
    notes = _run_child_until_killed(url, key_file, checkpoints=6)
    log = await AuditLog.open(url, load_or_create_signing_key(key_file), ORIGIN)
    try:
        last = SignedCheckpoint.parse(notes[-1], log.vkey)
        assert last.size > 0
        now = await log.checkpoint()
        records = log.store.count_records(log.log_id)
        assert now.size == records >= last.size  # every committed record is integrated
        proof = await log.consistency_proof(last.size, now.size)
        verify_consistency(last.size, now.size, last.root_hash, now.root_hash, proof.hashes)
    finally:
        await log.close()
    report = verify_log(LogStore.open(url), notes[-1], vkey=log.vkey)[0]
    assert report.records == records
