"""Export a bundle from a real gateway, verify it offline, and catch every kind of tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import LogStore, load_or_create_signing_key
from proxy.evidence import (
    BundleInvalid,
    ExportFailed,
    ExportOptions,
    build_bundle,
    persist_identity,
    verify_bundle,
)
from proxy.evidence._export import instant_us
from proxy.evidence._manifest import sign_manifest
from tests.evidence.conftest import Traffic, export, rezip, unzip, window
from tests.server import run_cli


def _failed(data: bytes, vkey: str | None = None) -> list[tuple[str, str]]:
    verdict = verify_bundle(data, vkey=vkey, allow_simulated=True)  # the gateway's is simulated
    assert not verdict.ok
    return [(c.name, c.file or "") for c in verdict.failures]


def test_bundle_from_real_server_verifies(bundle: bytes, traffic: Traffic) -> None:
    verdict = verify_bundle(bundle, allow_simulated=True)
    assert verdict.ok, verdict.table()
    assert verdict.insecure  # simulated evidence is accepted when asked for, and flagged
    files = unzip(bundle)
    manifest = json.loads(files["manifest.json"])
    records = [json.loads(line) for line in files["records/records.jsonl"].splitlines()]
    # intent + completion per allowed request, one denial per denied request
    assert len(records) == manifest["records"]["exported"] == 2 * traffic.allowed + traffic.denied
    names = {c.name for c in verdict.checks}
    assert {"manifest signature", "file hashes", "attestation", "policy digest", "consistency",
            "checkpoint signature", "record signature", "inclusion", "policy in force",
            "evidence binding", "record set"} <= names
    report = files["report.html"].decode()
    for control in ("Art. 12", "Art. 19", "Art. 26(6)", "CC6", "CC7", "A.8.15", "A.8.16",
                    "A.5.34", "Art. 28"):
        assert control in report
    assert "<script" not in report and "http://" not in report.replace(traffic.gateway.url, "")


def test_file_hashes_row_counts_every_file_checked(bundle: bytes) -> None:
    files = unzip(bundle)
    listed = json.loads(files["manifest.json"])["files"]
    assert len(listed) == len(files) - 2  # all but the manifest and its signature
    verdict = verify_bundle(bundle, allow_simulated=True)
    row = next(c for c in verdict.checks if c.name == "file hashes")
    assert row.ok and row.detail == f"{len(listed)} files match the manifest"


@pytest.mark.parametrize("scope", ["empty window", "tenant without records"])
def test_export_without_records_or_server_still_verifies(traffic: Traffic, tmp_path: Path,
                                                         scope: str) -> None:
    """No record cites an identity document: the newest kept one that attests the log key is
    exported all the same (no ``--server`` either), so the bundle verifies."""
    start, end = window()
    args = ("--from", "2020-01-01", "--to", "2020-01-02")
    if scope == "tenant without records":
        assert traffic.gateway.cli("tenants", "create", "initech", "--exist-ok").returncode == 0
        args = ("--from", start, "--to", end, "--tenant", "initech")
    run = traffic.gateway.cli("evidence", "export", *args, "-o", str(tmp_path / "b.zip"))
    assert run.returncode == 0, run.stderr
    data = (tmp_path / "b.zip").read_bytes()
    files = unzip(data)
    assert json.loads(files["manifest.json"])["records"]["exported"] == 0
    assert len([n for n in files if n.startswith("identity/")]) == 1
    verdict = verify_bundle(data, allow_simulated=True)
    assert verdict.ok, verdict.table()


def test_export_changes_nothing_in_the_audit_database(traffic: Traffic, tmp_path: Path) -> None:
    """An export opens the log read-only: a copy of the data folder handed to whoever exports
    keeps its audit database byte for byte (no migration, no switch to WAL)."""
    copy = _data_copy(traffic, tmp_path)
    with sqlite3.connect(copy / "audit.db") as kept:
        kept.execute("PRAGMA journal_mode=DELETE")
    before = hashlib.sha256((copy / "audit.db").read_bytes()).hexdigest()
    start, end = window()
    run = run_cli({**traffic.gateway.env, "SEALGATE_DATA_DIR": str(copy)}, "evidence", "export",
                  "--from", start, "--to", end, "-o", str(tmp_path / "b.zip"))
    assert run.returncode == 0, run.stderr
    assert hashlib.sha256((copy / "audit.db").read_bytes()).hexdigest() == before
    assert verify_bundle((tmp_path / "b.zip").read_bytes(), allow_simulated=True).ok


def _data_copy(traffic: Traffic, tmp_path: Path) -> Path:
    """A copy of the gateway's data folder, its audit database copied consistently."""
    source = traffic.gateway.data_dir
    copy = tmp_path / "data"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("audit.db*"))
    with sqlite3.connect(source / "audit.db") as live, sqlite3.connect(copy / "audit.db") as kept:
        live.backup(kept)
    return copy


def test_a_failed_export_leaves_no_partial_bundle_and_keeps_the_old_one(traffic: Traffic,
                                                                       tmp_path: Path) -> None:
    """The bundle is written beside its name and renamed once whole: an export that fails
    (here at a record the log never signed, found once the bundle was started) leaves the file
    it would have replaced as it was, and nothing else."""
    copy = _data_copy(traffic, tmp_path)
    with sqlite3.connect(copy / "audit.db") as db:
        last = db.execute("SELECT MAX(leaf_index) FROM audit_records").fetchone()[0]
        db.execute("UPDATE audit_records SET envelope = CAST('not signed' AS BLOB) "
                   "WHERE leaf_index = ?", (last - 1,))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.zip").write_bytes(b"the previous bundle")
    start, end = window()
    run = run_cli({**traffic.gateway.env, "SEALGATE_DATA_DIR": str(copy)}, "evidence", "export",
                  "--from", start, "--to", end, "-o", str(out / "b.zip"))
    assert run.returncode == 1
    assert "does not match what the log signed" in run.stderr
    assert (out / "b.zip").read_bytes() == b"the previous bundle"
    assert sorted(p.name for p in out.iterdir()) == ["b.zip"]


def test_an_export_replaces_a_bundle_keeping_its_mode(traffic: Traffic, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    out.write_bytes(b"the previous bundle")
    out.chmod(0o600)
    start, end = window()
    run = traffic.gateway.cli("evidence", "export", "--from", start, "--to", end, "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert verify_bundle(out.read_bytes(), allow_simulated=True).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zip"]


@pytest.mark.parametrize("kept", ["none", "another key's"])
def test_export_with_no_document_for_the_log_key_fails(traffic: Traffic, tmp_path: Path,
                                                       kept: str) -> None:
    """A bundle without a document that attests the log key can never verify: the export
    fails and says to fetch the gateway's with --server."""
    data_dir = traffic.gateway.data_dir
    if kept == "another key's":
        theirs = json.loads(next((data_dir / "identity").glob("*.json")).read_bytes())
        persist_identity(tmp_path, {**theirs, "audit_public_key": base64.b64encode(
            bytes(32)).decode()})
    key = load_or_create_signing_key(data_dir / "keys" / "log-signing-key.pem")
    store = LogStore.open(f"sqlite:///{data_dir / 'audit.db'}", read_only=True)
    empty = ExportOptions(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC))
    try:
        with pytest.raises(ExportFailed, match="--server URL"):
            build_bundle(store, tmp_path, key, empty)
    finally:
        store.close()


def test_cli_verify_prints_table_and_json(traffic: Traffic, evidence_workdir: Path,
                                          bundle: bytes) -> None:
    path = evidence_workdir / "bundle.zip"
    table = traffic.gateway.cli("evidence", "verify", str(path), "--allow-simulated")
    assert table.returncode == 0 and "verdict: PASSED (insecure" in table.stdout
    doc = json.loads(traffic.gateway.cli("evidence", "verify", str(path), "--json",
                                         "--allow-simulated").stdout)
    assert doc["ok"] is True and doc["insecure"] is True


def test_cli_verify_judges_measurements_by_the_verifiers_policy(
        traffic: Traffic, evidence_workdir: Path, bundle: bytes) -> None:
    path = evidence_workdir / "bundle.zip"
    measurement = json.loads(next(v for k, v in unzip(bundle).items()
                                  if k.startswith("identity/")))["measurement"]
    for allowed, code in ((measurement, 0), ("ab" * 48, 1)):
        policy = evidence_workdir / f"policy-{code}.json"
        policy.write_text(json.dumps({"allowed_measurements": [allowed]}))
        run = traffic.gateway.cli("evidence", "verify", str(path), "--allow-simulated",
                                  "--policy", str(policy), "--json")
        assert run.returncode == code, run.stderr
        attestation = [c for c in json.loads(run.stdout)["checks"] if c["name"] == "attestation"]
        assert all(c["ok"] is (code == 0) for c in attestation) and attestation
        if code:
            assert "not allow-listed" in attestation[0]["detail"]
    broken = evidence_workdir / "broken-policy.json"
    broken.write_text('{"allow_debug": "false"}')
    run = traffic.gateway.cli("evidence", "verify", str(path), "--policy", str(broken))
    assert run.returncode != 0 and "policy_invalid" in run.stderr and "Traceback" not in run.stderr


def test_cli_verify_takes_a_collateral_folder(traffic: Traffic, evidence_workdir: Path,
                                              bundle: bytes) -> None:
    path = evidence_workdir / "bundle.zip"
    folder = evidence_workdir / "collateral"
    folder.mkdir(exist_ok=True)
    run = traffic.gateway.cli("evidence", "verify", str(path), "--allow-simulated",
                              "--collateral", str(folder))
    assert run.returncode == 0 and "verdict: PASSED (insecure" in run.stdout
    run = traffic.gateway.cli("evidence", "verify", str(path), "--collateral",
                              str(evidence_workdir / "nowhere"))
    assert run.returncode != 0 and "cannot read the collateral folder" in run.stderr
    assert "Traceback" not in run.stderr


_TARGETS = ["manifest.json", "manifest.sig", "report.html", "log.json", "identity/",
            "policies/index.json", "policies/*/rego/", "checkpoints/*.note",
            "checkpoints/consistency.json", "records/records.jsonl"]


def _match(name: str, target: str) -> bool:
    head, _, tail = target.partition("*")
    return name.startswith(head) and (not tail or tail in name[len(head):])


@pytest.mark.parametrize("target", _TARGETS)
def test_one_flipped_byte_is_caught_and_named(bundle: bytes, target: str) -> None:
    files = unzip(bundle)
    name = next(n for n in sorted(files) if _match(n, target))
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0x01
    files[name] = bytes(data)
    failed = _failed(rezip(files))
    assert any(name in where for _check, where in failed), failed


def test_cli_exits_non_zero_and_names_the_file(traffic: Traffic, bundle: bytes,
                                               tmp_path: Path) -> None:
    files = unzip(bundle)
    files["records/records.jsonl"] = files["records/records.jsonl"].replace(b'"leaf_index": 1,',
                                                                            b'"leaf_index": 2,')
    path = tmp_path / "tampered.zip"
    path.write_bytes(rezip(files))
    result = traffic.gateway.cli("evidence", "verify", str(path))
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "records/records.jsonl" in result.stdout
    assert "verdict: FAILED" in result.stdout


def _drop_second_record(files: dict[str, bytes]) -> None:
    lines = files["records/records.jsonl"].splitlines(keepends=True)
    files["records/records.jsonl"] = b"".join(lines[:1] + lines[2:])


def test_removed_record_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    _drop_second_record(files)
    failed = _failed(rezip(files))
    assert ("file hash", "records/records.jsonl") in failed
    assert ("record set", "records/records.jsonl") in failed


def test_removed_record_with_rehashed_manifest_breaks_the_signature(bundle: bytes) -> None:
    files = unzip(bundle)
    _drop_second_record(files)
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["records/records.jsonl"] = hashlib.sha256(
        files["records/records.jsonl"]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    failed = _failed(rezip(files))
    assert ("manifest signature", "manifest.json, manifest.sig") in failed
    assert ("record set", "records/records.jsonl") in failed


def test_resigned_with_another_key_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    _drop_second_record(files)
    other = Ed25519PrivateKey.generate()
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["records/records.jsonl"] = hashlib.sha256(
        files["records/records.jsonl"]).hexdigest()
    manifest["records"]["leaves"].pop(1)
    files["manifest.json"] = json.dumps(manifest).encode()
    files["manifest.sig"] = sign_manifest(files["manifest.json"], other)
    names = {check for check, _ in _failed(rezip(files))}
    # the signature verifies under the bundle's stated key, but that key is not the forger's
    assert "manifest signature" in names


def _padding_bit(signature: bytes) -> bytes:
    """The same signature in non-canonical base64: a padding bit of its last character set."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    at = signature.index(b"=") - 1
    return signature[:at] + bytes([alphabet[alphabet.index(signature[at]) ^ 1]]) + signature[at + 1:]


@pytest.mark.parametrize("change", [
    lambda sig: sig.replace(b"\n", b"\x0b"),
    lambda sig: sig + b"\n",
    lambda sig: b" " + sig,
    lambda sig: sig.removesuffix(b"\n"),
    _padding_bit,
], ids=["vertical tab for the newline", "a second newline", "a leading space", "no newline",
        "non-canonical base64"])
def test_manifest_signature_is_checked_byte_for_byte(bundle: bytes, change: Any) -> None:
    """The signature still verifies once decoded; the file is not the one the export wrote."""
    files = unzip(bundle)
    changed = change(files["manifest.sig"])
    assert changed != files["manifest.sig"]
    assert base64.b64decode(changed.strip()) == base64.b64decode(files["manifest.sig"])
    files["manifest.sig"] = changed
    assert ("manifest signature", "manifest.json, manifest.sig") in _failed(rezip(files))


@pytest.mark.parametrize("name", ["report.html", "log.json"])
def test_a_bundle_its_own_key_signed_must_still_be_whole(
        bundle: bytes, traffic: Traffic, name: str) -> None:
    key = load_or_create_signing_key(traffic.gateway.data_dir / "keys" / "log-signing-key.pem")
    files = unzip(bundle)
    del files[name]
    manifest = json.loads(files["manifest.json"])
    del manifest["files"][name]
    files["manifest.json"] = json.dumps(manifest).encode()
    files["manifest.sig"] = sign_manifest(files["manifest.json"], key)
    assert ("file hash", name) in _failed(rezip(files))


def test_swapped_checkpoint_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    notes = sorted(n for n in files if n.startswith("checkpoints/") and n.endswith(".note"))
    assert len(notes) >= 2
    files[notes[-1]], files[notes[-2]] = files[notes[-2]], files[notes[-1]]
    failed = _failed(rezip(files))
    assert ("checkpoint signature", notes[-1]) in failed
    assert ("file hash", notes[-1]) in failed


def test_pinned_key_mismatch_fails(bundle: bytes, traffic: Traffic) -> None:
    key = load_or_create_signing_key(traffic.gateway.data_dir / "keys" / "log-signing-key.pem")
    own = json.loads(unzip(bundle)["manifest.json"])["log"]["vkey"]
    assert verify_bundle(bundle, vkey=own, allow_simulated=True).ok and key is not None
    other = own.rsplit("+", 1)[0] + "+" + base64.b64encode(bytes(33)).decode()
    assert ("log key", "manifest.json") in _failed(bundle, vkey=other)


def test_truncated_or_foreign_file_is_not_a_bundle(bundle: bytes) -> None:
    with pytest.raises(BundleInvalid) as info:
        verify_bundle(bundle[: len(bundle) // 2])
    assert str(info.value).startswith("bundle_invalid: ")
    assert not verify_bundle(rezip({"hello.txt": b"x"})).ok


def test_an_empty_tenant_name_is_no_tenant_not_every_tenant(traffic: Traffic, tmp_path: Path) -> None:
    """``--tenant "$T"`` with ``T`` unset: refused, never a bundle of every tenant's records."""
    start, end = window()
    run = traffic.gateway.cli("evidence", "export", "--from", start, "--to", end, "--tenant", "",
                              "-o", str(tmp_path / "b.zip"))
    assert run.returncode != 0 and "no tenant named ''" in run.stderr
    assert not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("2020-03-01T12:00:00Z", 1583064000_000000),
    ("2020-03-01T12:00:00.1Z", 1583064000_100000),
    ("2020-03-01T12:00:00.100000Z", 1583064000_100000),
    ("0001-01-01T00:00:00Z", -62135596800_000000),
    ("2020-03-01T12:00:00", None), ("2020-03-01T12:00:00+01:00", None), ("\uff12020-01-01Z", None),
])
def test_record_times_compare_as_instants(text: str, expected: int | None) -> None:
    """As text, ``12:00:00Z`` sorts after ``12:00:00.1Z`` ('Z' > '.'): an honest record of a
    writer that omits the fraction was outside its window, and one before it inside."""
    assert instant_us(text) == expected


def test_sampled_and_tenant_bundles(traffic: Traffic, evidence_workdir: Path) -> None:
    sampled = export(traffic, evidence_workdir / "sample.zip", "--sample", "3")
    manifest = json.loads(unzip(sampled)["manifest.json"])
    assert manifest["records"]["exported"] == 3 and manifest["records"]["sampled"]
    assert verify_bundle(sampled, allow_simulated=True).ok
    acme = export(traffic, evidence_workdir / "acme.zip", "--tenant", "acme")
    files = unzip(acme)
    tenant = json.loads(files["manifest.json"])["tenant"]
    lines = files["records/records.jsonl"].splitlines()
    assert tenant and lines and verify_bundle(acme, allow_simulated=True).ok
    for line in lines:
        envelope = json.loads(json.loads(line)["envelope"])
        assert json.loads(base64.b64decode(envelope["payload"]))["predicate"]["tenant"] == tenant


@pytest.mark.parametrize(("text", "end", "expected"), [
    ("2024-01-01", False, "2024-01-01T00:00:00+00:00"),
    ("2024-01-01", True, "2024-01-02T00:00:00+00:00"),
    ("20240101", True, "2024-01-02T00:00:00+00:00"),  # the basic form is a whole day too
    ("2024-01-01T12:30:00", True, "2024-01-01T12:30:00+00:00"),
    ("2024-01-01T12:30:00Z", False, "2024-01-01T12:30:00+00:00"),
])
def test_export_window_bounds(text: str, end: bool, expected: str) -> None:
    from proxy.cli._evidence import parse_when

    assert parse_when(text, end=end).isoformat() == expected


@pytest.mark.parametrize("args", [
    ("--from", "2024-01-01", "--to", "9999-12-31", "-o", "{out}/b.zip"),
    ("--from", "2024-01-01", "--to", "2024-13-01", "-o", "{out}/b.zip"),
    ("--from", "2024-01-01", "--to", "2024-01-02", "-o", "{out}/missing/b.zip"),
])
def test_export_refuses_bad_arguments_cleanly(traffic: Traffic, evidence_workdir: Path,
                                              args: tuple[str, ...]) -> None:
    run = traffic.gateway.cli("evidence", "export",
                              *(a.format(out=evidence_workdir) for a in args))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.startswith("sealgate: ") and len(run.stderr.strip().splitlines()) == 1
