"""``sealgate audit verify|show|checkpoint`` against a real log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from audit import AuditLog, CorruptStore, LogStore, SignedCheckpoint
from proxy.cli import main
from tests.audit.conftest import ORIGIN, make_record


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    async def build() -> str:
        log = await AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}",
                                  Ed25519PrivateKey.generate(), ORIGIN)  # fmt: skip
        receipt = [await log.append(make_record(i)) for i in range(12)][5]
        await log.close()
        return receipt.record_id

    record_id = asyncio.run(build())
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SEALGATE_AUDIT_URL", raising=False)
    return tmp_path, record_id


def test_verify_show_checkpoint(data_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:  # fmt: skip
    _, record_id = data_dir
    assert main(["audit", "checkpoint"]) == 0
    note = capsys.readouterr().out
    assert note.startswith(f"{ORIGIN}\n12\n")
    (tmp_path / "kept.note").write_text(note)
    assert main(["audit", "verify", "--json", "--from-checkpoint", str(tmp_path / "kept.note")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["logs"][0]["records"] == 12
    assert main(["audit", "show", record_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["leaf_index"] == 5 and shown["statement"]["predicate"]["request_id"] == "req-5"


def test_verify_fails_on_tampering(data_dir: tuple[Path, str],
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    folder, _ = data_dir
    store = LogStore.open(f"sqlite:///{folder / 'audit.db'}")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET decision = 'deny' WHERE leaf_index = 2"))
    store.close()
    assert main(["audit", "verify"]) == 1
    assert "verification_failed" in capsys.readouterr().err
    # With --json, a failure is a document on stdout too, not only a line on stderr.
    assert main(["audit", "verify", "--json"]) == 1
    captured = capsys.readouterr()
    failed = json.loads(captured.out)
    assert failed["ok"] is False and failed["error"]["code"] == "verification_failed"
    assert f"verification_failed: {failed['error']['detail']}" in captured.err


def test_json_failures_are_documents(tmp_path: Path, data_dir: tuple[Path, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Every `--json` failure prints {"ok": false, "error": {"code", "detail"}} on stdout."""
    for argv, code in (
            (["audit", "verify", "--db", f"sqlite:///{tmp_path / 'none.db'}"], "state_unavailable"),
            (["audit", "show", "0" * 32], "record_not_found"),
            (["audit", "verify", "--from-checkpoint", str(tmp_path / "none.note")], "invalid_argument"),
            (["evidence", "verify", str(tmp_path / "audit.db")], "bundle_invalid")):
        assert main([*argv, "--json"]) == 1
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is False and out["error"]["code"] == code, out


def test_checkpoint_prints_only_a_note_that_verifies(data_dir: tuple[Path, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # A stored note with a line appended (terminal escapes here) is not echoed to the terminal.
    folder, _ = data_dir
    store = LogStore.open(f"sqlite:///{folder / 'audit.db'}")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_checkpoints SET note = note || :extra"),
                     {"extra": "\u2014 x\x1b[2J AAAAAAAA\n"})
    store.close()
    assert main(["audit", "checkpoint"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "does not verify: malformed note" in captured.err
    assert "\x1b" not in captured.err


def test_missing_database_and_record(tmp_path: Path, data_dir: tuple[Path, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["audit", "verify", "--db", f"sqlite:///{tmp_path / 'none.db'}"]) == 1
    assert main(["audit", "show", "0" * 32]) == 1
    assert "no record or request with this id" in capsys.readouterr().err


def test_show_finds_a_request_by_its_request_id(data_dir: tuple[Path, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The x-request-id that logs and answers carry finds the request's records too."""
    _, record_id = data_dir
    assert main(["audit", "show", "req-5", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["request_id"] == "req-5"
    assert [r["record_id"] for r in shown["records"]] == [record_id]
    assert shown["records"][0]["statement"]["predicate"]["request_id"] == "req-5"


def test_verify_from_checkpoint_errors_are_clear(data_dir: tuple[Path, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["audit", "verify", "--from-checkpoint", str(tmp_path / "missing.note")]) == 1
    assert "cannot read the checkpoint file" in capsys.readouterr().err
    other = SignedCheckpoint.sign("other.test/log", 1, bytes(32), Ed25519PrivateKey.generate())
    (tmp_path / "other.note").write_text(other.note)
    assert main(["audit", "verify", "--from-checkpoint", str(tmp_path / "other.note")]) == 1
    assert "verification_failed: no log in the store" in capsys.readouterr().err


def test_verify_changes_nothing_and_refuses_what_is_not_an_audit_log(
        data_dir: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verification opens the file read-only: a copy handed to an auditor keeps its hash (no
    migration, no switch to WAL), and a database that is not an audit log is refused as such."""
    import hashlib
    import shutil
    import sqlite3

    folder, _ = data_dir
    copy = tmp_path / "copy" / "audit.db"
    copy.parent.mkdir()
    sqlite3.connect(folder / "audit.db").execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    shutil.copy(folder / "audit.db", copy)
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert main(["audit", "verify", "--db", f"sqlite:///{copy}"]) == 0
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").close()
    before = hashlib.sha256(foreign.read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["audit", "verify", "--db", f"sqlite:///{foreign}"]) == 1
    assert "not a Sealgate audit database" in capsys.readouterr().err
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == before


def test_audit_commands_read_the_config_file(data_dir: tuple[Path, str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = data_dir
    monkeypatch.delenv("SEALGATE_DATA_DIR")
    monkeypatch.chdir(tmp_path / "..")  # no ./var here: only the config names the log
    config = tmp_path / "sealgate.toml"
    config.write_text(f'data_dir = "{folder}"\n')
    assert main(["audit", "checkpoint", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{ORIGIN}\n12\n")
    monkeypatch.setenv("SEALGATE_CONFIG", str(config))
    assert main(["audit", "verify"]) == 0


def test_show_and_checkpoint_on_an_edited_store(data_dir: tuple[Path, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed stored envelope is a clear error, not a traceback; the checkpoint's size is
    the signed one, not its table column."""
    folder, record_id = data_dir
    store = LogStore.open(f"sqlite:///{folder / 'audit.db'}")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET envelope = x'7b6e6f74206a736f6e' "
                          "WHERE record_id = :r"), {"r": record_id})
        conn.execute(text("UPDATE audit_checkpoints SET size = 1000000 WHERE size = 12"))
    store.close()
    assert main(["audit", "show", record_id]) == 1
    assert f"a record of {record_id} is malformed in the store" in capsys.readouterr().err
    assert main(["audit", "checkpoint", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["size"] == 12


@pytest.mark.parametrize("stored", ["'a text envelope'", "7"])
def test_a_mistyped_envelope_is_a_corrupt_store_not_made_up_bytes(
        data_dir: tuple[Path, str], stored: str) -> None:
    folder, record_id = data_dir
    url = f"sqlite:///{folder / 'audit.db'}"
    store = LogStore.open(url)
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE audit_records SET envelope = {stored} WHERE record_id = :r"),
                     {"r": record_id})
    store.close()

    async def read() -> None:
        log = await AuditLog.open(url, Ed25519PrivateKey.generate(), "other.test/log")
        try:
            with pytest.raises(CorruptStore):
                await log.get_record(record_id)
            with pytest.raises(CorruptStore):
                await log.request_records(make_record(5).fields["tenant"], "req-5")
        finally:
            await log.close()

    asyncio.run(read())
