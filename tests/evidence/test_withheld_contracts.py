"""A tenant's evidence bundle withholds the contents of other tenants' contract files, listing
each by its path (which names the tenant) and SHA-256 so the policy digest still verifies;
nothing else is withheld. A random comment line in a contract file makes its hash unguessable."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from audit import LogStore, load_or_create_signing_key
from policy import bundle_digest, contract_owner, listing_digest, load_bundle
from policy._bundle import default_bundle_dir
from proxy.evidence import ExportOptions, build_bundle, verify_bundle
from proxy.tenants import TenantStore
from tests.evidence.conftest import Traffic, rezip, unzip


def _bundle_dir(tmp_path: Path) -> Path:
    """The shipped bundle with a contract file each for acme and globex."""
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir() / "rego", root / "rego")
    shutil.copytree(default_bundle_dir() / "data", root / "data")
    default = yaml.safe_load((root / "data" / "contracts.yaml").read_text())["contracts"]["default"]
    (root / "data" / "contracts").mkdir()
    for name in ("acme", "globex"):
        (root / "data" / "contracts" / f"{name}.yaml").write_text(
            yaml.safe_dump({name: {**default, "max_tokens": 1000 + len(name)}}))
    return root


def _export(traffic: Traffic, tmp_path: Path, tenant: str | None) -> bytes:
    source, copy = traffic.gateway.data_dir, tmp_path / "data"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("audit.db*"))
    with sqlite3.connect(source / "audit.db") as live, sqlite3.connect(copy / "audit.db") as kept:
        live.backup(kept)
    pseudonym = None
    if tenant is not None:
        tenants = TenantStore(f"sqlite:///{copy / 'sealgate.db'}")
        try:
            pseudonym = tenants.tenant(tenant).pseudonym
        finally:
            tenants.close()
    key = load_or_create_signing_key(copy / "keys" / "log-signing-key.pem")
    store = LogStore.open(f"sqlite:///{copy / 'audit.db'}", read_only=True)
    now = datetime.now(UTC)
    options = ExportOptions(now - timedelta(days=1), now + timedelta(minutes=1), pseudonym,
                            policy_bundle=str(_bundle_dir(tmp_path)), tenant_name=tenant)
    try:
        return build_bundle(store, copy, key, options)
    finally:
        store.close()


def _current(files: dict[str, bytes]) -> dict[str, object]:
    index = json.loads(files["policies/index.json"])
    return next(e for e in index if e["current"])


def test_a_tenants_bundle_withholds_other_tenants_contracts(traffic: Traffic, tmp_path: Path) -> None:
    data = _export(traffic, tmp_path, "acme")
    files = unzip(data)
    entry = _current(files)
    folder = f"policies/{str(entry['digest']).removeprefix('sha256:')}/"
    kept = {name.removeprefix(folder) for name in files if name.startswith(folder)}
    assert "data/contracts/acme.yaml" in kept and "data/contracts.yaml" in kept
    assert "data/contracts/globex.yaml" not in kept
    theirs = (tmp_path / "bundle" / "data" / "contracts" / "globex.yaml").read_bytes()
    assert not any(theirs in content for content in files.values())
    assert entry["withheld"] == {"data/contracts/globex.yaml": hashlib.sha256(theirs).hexdigest()}
    verdict = verify_bundle(data, allow_simulated=True)
    assert verdict.ok, verdict.table()
    check = next(c for c in verdict.checks if c.name == "policy digest" and c.file == folder)
    assert "1 other tenants' contract files by hash" in check.detail


def test_a_bundle_for_all_tenants_withholds_nothing(traffic: Traffic, tmp_path: Path) -> None:
    files = unzip(data := _export(traffic, tmp_path, None))
    entry = _current(files)
    assert entry["withheld"] == {}
    folder = f"policies/{str(entry['digest']).removeprefix('sha256:')}/"
    assert {folder + "data/contracts/acme.yaml", folder + "data/contracts/globex.yaml"} <= set(files)
    assert verify_bundle(data, allow_simulated=True).ok


@pytest.mark.parametrize("forgery", ["module withheld", "wrong hash", "withheld and kept"])
def test_only_other_tenants_contracts_can_be_withheld(traffic: Traffic, tmp_path: Path,
                                                      forgery: str) -> None:
    """A bundle that withholds a policy module (the rules an auditor must read), gives a
    withheld file the wrong hash, or both keeps and withholds a file, fails its policy check."""
    files = unzip(_export(traffic, tmp_path, "acme"))
    index = json.loads(files["policies/index.json"])
    entry = next(e for e in index if e["current"])
    folder = f"policies/{entry['digest'].removeprefix('sha256:')}/"
    if forgery == "module withheld":
        module = next(rel for rel in entry["files"] if rel.endswith(".rego"))
        entry["files"].remove(module)
        entry["withheld"][module] = hashlib.sha256(files.pop(folder + module)).hexdigest()
    elif forgery == "wrong hash":
        entry["withheld"]["data/contracts/globex.yaml"] = "0" * 64
    else:
        entry["withheld"]["data/contracts/acme.yaml"] = hashlib.sha256(
            files[folder + "data/contracts/acme.yaml"]).hexdigest()
    files["policies/index.json"] = json.dumps(index).encode()
    verdict = verify_bundle(rezip(files), allow_simulated=True)
    assert not verdict.ok
    assert any(c.name == "policy digest" and not c.ok for c in verdict.checks), verdict.table()


def test_a_contract_file_is_a_tenants_own_only_when_it_holds_that_contract_alone(
        tmp_path: Path) -> None:
    """``globex.yaml`` holding another tenant's contract too is shared, not withheld: it would
    keep that tenant's own contract from its bundle, or show a third tenant's to another."""
    root = _bundle_dir(tmp_path)
    bundle = load_bundle(root)
    assert bundle.contract("acme")["max_tokens"] == 1004
    assert listing_digest({rel: hashlib.sha256(raw).hexdigest()
                           for rel, raw in bundle.files.items()}) == bundle_digest(bundle.files)
    own = bundle.files["data/contracts/globex.yaml"]
    assert contract_owner("data/contracts/globex.yaml", own) == "globex"
    both = yaml.safe_dump({**yaml.safe_load(own), "initech": yaml.safe_load(own)["globex"]})
    assert contract_owner("data/contracts/globex.yaml", both.encode()) is None
    assert contract_owner("data/contracts/globex.yaml", b"globex: [") is None


@pytest.mark.parametrize(("rel", "owner"), [
    ("data/contracts/acme.yaml", "acme"), ("data/contracts/acme.json", "acme"),
    ("data/contracts/acme/limits.yml", "acme"), ("data/contracts/default.yaml", None),
    ("data/contracts.yaml", None), ("rego/authz.rego", None), ("data/contracts/Acme.yaml", None),
    ("data/contracts/acme.txt", None), ("data/other/acme.yaml", None),
])
def test_contract_owner(rel: str, owner: str | None) -> None:
    assert contract_owner(rel) == owner


def test_a_comment_line_changes_a_contracts_hash_and_nothing_else(tmp_path: Path) -> None:
    """The terms of ``globex.yaml`` can be guessed and checked against its hash; a comment line
    with a random value changes the hash, while the contract and its owner stay."""
    root = _bundle_dir(tmp_path)
    path = root / "data" / "contracts" / "globex.yaml"
    plain = load_bundle(root)
    path.write_text(f"# nonce: {secrets.token_hex(16)}\n" + path.read_text())
    salted = load_bundle(root)
    rel = "data/contracts/globex.yaml"
    assert hashlib.sha256(salted.files[rel]).digest() != hashlib.sha256(plain.files[rel]).digest()
    assert salted.digest != plain.digest
    assert salted.contract("globex") == plain.contract("globex")
    assert contract_owner(rel, salted.files[rel]) == "globex"
