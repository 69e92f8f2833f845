"""Bundle loading, the digest encoding, Rego unit tests, and hot reload."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy import (
    BundleWatcher,
    OPAEngine,
    PolicyBundle,
    PolicyBundleError,
    PolicyUnavailable,
    RegopyEngine,
    load_bundle,
    run_rego_tests,
)
from proxy.evidence import policy_snapshots, snapshot_policy
from tests.policy.conftest import SHIPPED
from tests.policy.opa_servers import FakeOPAServer


def test_digest_is_sha256_over_sorted_sha256sum_listing(bundle: PolicyBundle) -> None:
    files = sorted(
        [p for p in (SHIPPED / "rego").rglob("*.rego")]
        + [p for p in (SHIPPED / "data").rglob("*") if p.suffix in (".yaml", ".yml", ".json")],
        key=lambda p: p.relative_to(SHIPPED).as_posix().encode(),
    )
    listing = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(SHIPPED).as_posix()}\n" for p in files
    )
    assert bundle.digest == "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
    assert any(name.endswith("_test.rego") for name in bundle.tests)
    assert "default" in bundle.data["contracts"]


def _digest_recipe() -> str:
    """docs/policy.md's coreutils command, as written, for the bundle in the working directory."""
    doc = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    recipe = doc.split("```sh\n", 1)[1].split("```", 1)[0]
    return recipe.replace("cd BUNDLE && ", "").split("#", 1)[0]


def test_the_documented_digest_recipe_takes_any_file_name(bundle_dir: Path) -> None:
    """File names may hold a space or a quote: plain ``xargs`` split on the one and stopped at
    the other, printing another bundle's digest."""
    unit = (bundle_dir / "rego" / "authz_test.rego").read_text()
    (bundle_dir / "rego" / "extra checks_test.rego").write_text(unit.replace("authz_test", "x1"))
    (bundle_dir / "rego" / "o'brien_test.rego").write_text(unit.replace("authz_test", "x2"))
    done = subprocess.run(["bash", "-c", _digest_recipe()], cwd=bundle_dir, capture_output=True,
                          text=True, check=True)
    assert done.stderr == ""
    assert "sha256:" + done.stdout.split()[0] == load_bundle(bundle_dir).digest


def test_the_documented_digest_recipe_agrees_on_a_configmap_mount(tmp_path: Path) -> None:
    """docs/policy.md's coreutils command, run as written, on the shipped bundle laid out as a
    Kubernetes ConfigMap volume (files are links into a hidden, timestamped directory)."""
    mount = tmp_path / "mount"
    for part in ("rego", "data"):
        stamped = mount / part / "..2026_11_23_00_00_00.1"
        shutil.copytree(SHIPPED / part, stamped, ignore=shutil.ignore_patterns("__pycache__"))
        (mount / part / "..data").symlink_to(stamped.name)
        for file in stamped.iterdir():
            (mount / part / file.name).symlink_to(Path("..data") / file.name)
    bundle = load_bundle(mount)
    assert bundle.digest == load_bundle().digest
    out = subprocess.run(["bash", "-c", _digest_recipe()], cwd=mount, capture_output=True, text=True,
                         check=True).stdout
    assert "sha256:" + out.split()[0] == bundle.digest


def test_a_linked_folder_is_part_of_the_bundle(tmp_path: Path) -> None:
    """A folder below data/ (or rego/) that is a symbolic link, as a ConfigMap item with a
    nested path mounts it: its files are loaded and digested (as ``find -L`` lists them), not
    skipped, which would leave a tenant on the looser ``default`` contract."""
    bundle_dir, elsewhere = tmp_path / "bundle", tmp_path / "elsewhere"
    shutil.copytree(SHIPPED, bundle_dir, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    contracts = yaml.safe_load((bundle_dir / "data" / "contracts.yaml").read_text())["contracts"]
    (bundle_dir / "data" / "contracts.yaml").write_text(
        yaml.safe_dump({"contracts": {"default": contracts["default"]}}))
    elsewhere.mkdir()
    tenant = {"linked-tenant": {**contracts["default"], "max_tokens": 7}}
    (elsewhere / "linked.yaml").write_text(yaml.safe_dump(tenant))
    (bundle_dir / "data" / "contracts").symlink_to(elsewhere)
    bundle = load_bundle(bundle_dir)
    assert bundle.contract("linked-tenant")["max_tokens"] == 7
    assert "data/contracts/linked.yaml" in bundle.files
    (elsewhere / "loop").symlink_to(bundle_dir / "data")  # back into its own ancestry
    with pytest.raises(PolicyBundleError, match="links back into itself"):
        load_bundle(bundle_dir)


def test_override_directory_and_digest_changes(bundle_dir: Path, bundle: PolicyBundle) -> None:
    assert load_bundle(bundle_dir).digest == bundle.digest
    with (bundle_dir / "data" / "contracts.yaml").open("a") as fh:
        fh.write("\n# reviewed\n")
    assert load_bundle(bundle_dir).digest != bundle.digest


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("data/contracts.yaml", "contracts: {}\n"),
        ("data/contracts.yaml", "contracts:\n  default: {models: []}\n"),
        ("data/broken.yaml", "a: [\n"),
        ("data/extra.json", '{"contracts": {"default": {"max_n": 2}}}'),
        ("rego/bad.rego", "package sealgate.authz\nallow if {\n"),
        ("rego/with.rego", "package sealgate.authz\nx if { allow with input.channel as 1 }\n"),
        ("data/dates.yaml", "reviewed: 2025-01-01\n"),
        ("data/nan.yaml", "limit: .nan\n"),
        ("rego/two\nlines.rego", "package sealgate.authz\n"),
        ("rego/tab\t.rego", "package sealgate.authz\n"),
        ("data/site\\notes.yaml", "notes: {}\n"),
        ("rego/contracts.json", '{"contracts": {}}'),
        ("data/extra.rego", "package sealgate.authz\n"),
    ],
    ids=["no_default", "incomplete_contract", "bad_yaml", "data_conflict", "syntax", "with",
         "yaml_date", "yaml_nan", "newline_in_name", "tab_in_name", "backslash_in_name",
         "data_in_rego_folder", "module_in_data_folder"],
)
def test_invalid_bundles_rejected(bundle_dir: Path, name: str, text: str) -> None:
    (bundle_dir / name).write_text(text)
    with pytest.raises(PolicyBundleError):
        RegopyEngine(load_bundle(bundle_dir)).reload(load_bundle(bundle_dir))


@pytest.mark.parametrize("expires", [
    "2030-01-01T00:00:30Z",  # decisions see the time truncated to the minute
    "\uff12\uff10\uff13\uff10-01-01T00:00:00Z",  # fullwidth digits sort after every instant
    "2030-13-01T00:00:00Z",  # no such month
    "2030-01-01T00:00:00Z\\n",
])
def test_contract_expiry_is_a_whole_minute(bundle_dir: Path, expires: str) -> None:
    """Compared with the decision time as strings: only ASCII digits of a real instant, to the
    minute, keep that comparison exact (a fullwidth year never expired)."""
    contracts = bundle_dir / "data" / "contracts.yaml"
    text = contracts.read_text()
    assert 'expires: "2030-01-01T00:00:00Z"' in text
    contracts.write_text(text.replace('"2030-01-01T00:00:00Z"', f'"{expires}"'))
    with pytest.raises(PolicyBundleError, match="whole minute"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["Acme-Health", "-acme", "acme health", "a" * 64, "ACME"])
def test_a_contract_named_as_no_tenant_can_be_is_refused(bundle_dir: Path, name: str) -> None:
    """It would never apply: its tenant would be held to ``default``, which may allow more."""
    contracts = bundle_dir / "data" / "contracts.yaml"
    text = contracts.read_text()
    assert "\n  acme-health:\n" in text
    contracts.write_text(text.replace("\n  acme-health:\n", f"\n  {name}:\n", 1))
    with pytest.raises(PolicyBundleError, match="is not named as a tenant can be"):
        load_bundle(bundle_dir)


def test_an_opa_engine_keeps_its_bundle_when_a_new_one_does_not_compile(bundle_dir: Path) -> None:
    """The OPA server would go on with the old policy: the broken bundle's digest must not
    reach decisions, records or the identity document."""
    engine = OPAEngine("http://127.0.0.1:8181", load_bundle(bundle_dir))  # never contacted
    digest = engine.bundle_digest
    (bundle_dir / "rego" / "broken.rego").write_text("package sealgate.authz\nallow if {\n")
    watcher = BundleWatcher(engine, bundle_dir)
    with pytest.raises(PolicyBundleError):
        watcher.check()
    assert watcher.poll() is False and watcher.poll() is False
    assert isinstance(watcher.last_error, PolicyBundleError) and engine.bundle_digest == digest
    with pytest.raises(PolicyBundleError):
        OPAEngine("http://127.0.0.1:8181", load_bundle(bundle_dir))


@pytest.mark.parametrize("value", ["-1", "true", '"8"', "1.5", "1000000001"])
@pytest.mark.parametrize("field", ["max_concurrent_requests", "requests_per_minute",
                                   "tokens_per_minute"])
def test_contract_request_limits_are_whole_numbers(bundle_dir: Path, field: str,
                                                   value: str) -> None:
    contracts = bundle_dir / "data" / "contracts.yaml"
    text = contracts.read_text()
    contracts.write_text(text.replace("    rewrite_store: false\n",
                                      f"    rewrite_store: false\n    {field}: {value}\n", 1))
    with pytest.raises(PolicyBundleError, match=f"{field} must be a whole number"):
        load_bundle(bundle_dir)
    contracts.write_text(text.replace("    rewrite_store: false\n",
                                      f"    rewrite_store: false\n    {field}: 8\n", 1))
    assert load_bundle(bundle_dir).contract("default")[field] == 8
    assert load_bundle(bundle_dir).contract("no-such-tenant")[field] == 8  # held to default


def test_file_names_cannot_forge_listing_lines(bundle_dir: Path) -> None:
    # A directory whose name holds "\n<sha>  <path>" would rebuild the listing of a bundle
    # that still has that file: printable names are required, so no two bundles share a digest.
    tenant = bundle_dir / "rego" / "tenant.rego"
    forged = f"retention.rego\n{hashlib.sha256(tenant.read_bytes()).hexdigest()}  rego"
    (bundle_dir / "rego" / forged).mkdir()
    (bundle_dir / "rego" / forged / "tenant.rego").write_bytes(b"package sealgate.authz\n")
    with pytest.raises(PolicyBundleError, match="not printable"):
        load_bundle(bundle_dir)


def test_hidden_names_are_not_part_of_the_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    # As for `opa run --ignore=.*`: what is digested (and kept for evidence) is what is evaluated.
    before = load_bundle(bundle_dir)
    (bundle_dir / "rego" / ".shadow.rego").write_text('package sealgate.authz\n\nallow := true\n')
    (bundle_dir / "data" / "..2026_11_22").mkdir()
    (bundle_dir / "data" / "..2026_11_22" / "contracts.yaml").write_text("contracts: {}\n")
    after = load_bundle(bundle_dir)
    assert after.digest == before.digest and after.files == before.files
    kept = tmp_path / "state"
    assert snapshot_policy(kept, bundle_dir) == before.digest
    assert dict(policy_snapshots(kept)[before.digest]) == dict(before.files)


def test_undecodable_file_name_is_a_bundle_error(bundle_dir: Path) -> None:
    (bundle_dir / "rego" / "x.rego").write_text("package sealgate.authz\n")
    undecodable = b"\xff.rego".decode(errors="surrogateescape")
    (bundle_dir / "rego" / "x.rego").rename(bundle_dir / "rego" / undecodable)
    with pytest.raises(PolicyBundleError, match="not printable"):
        load_bundle(bundle_dir)


def test_missing_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(PolicyBundleError, match="no rego/ folder"):
        load_bundle(tmp_path)


def test_shipped_rego_unit_tests_pass(bundle: PolicyBundle) -> None:
    results = run_rego_tests(bundle)
    assert len(results) >= 15
    assert [r.name for r in results if not r.passed] == []


def test_failing_rego_unit_test_is_reported(bundle_dir: Path) -> None:
    (bundle_dir / "rego" / "extra_test.rego").write_text(
        "package sealgate.extra_test\n\ntest_wrong if {\n\tdata.sealgate.authz.allow\n}\n"
    )
    results = {r.name: r for r in run_rego_tests(load_bundle(bundle_dir))}
    assert results["sealgate.extra_test.test_wrong"].passed is False


def _deny_everything(bundle_dir: Path) -> None:
    (bundle_dir / "rego" / "freeze.rego").write_text(
        'package sealgate.authz\n\ndeny contains {"rule": "SG-FREEZE-001", "message": "frozen"}\n'
    )


def test_hot_reload_under_concurrent_decisions(bundle_dir: Path, base_input: dict[str, Any]) -> None:
    old = load_bundle(bundle_dir)
    _deny_everything(bundle_dir)
    new = load_bundle(bundle_dir)
    engine = RegopyEngine(old, timeout_s=5.0, cache_size=0)

    async def run() -> list[tuple[bool, str]]:
        async def one() -> tuple[bool, str]:
            d = await engine.decide(base_input)
            return d.allow, d.bundle_digest

        first = [asyncio.create_task(one()) for _ in range(40)]
        await asyncio.sleep(0)
        await asyncio.to_thread(engine.reload, new)
        second = [asyncio.create_task(one()) for _ in range(40)]
        out = await asyncio.gather(*first, *second)
        await engine.aclose()
        return out

    results = asyncio.run(run())
    # Every decision completed, and each is consistent with the bundle its digest names.
    assert set(results) <= {(True, old.digest), (False, new.digest)}
    assert results[-1] == (False, new.digest)
    assert engine.bundle_digest == new.digest


def test_polling_installs_a_digest_only_once_it_has_settled(
    bundle_dir: Path, base_input: dict[str, Any]
) -> None:
    engine = RegopyEngine(load_bundle(bundle_dir), timeout_s=5.0)
    watcher = BundleWatcher(engine, bundle_dir)
    before = engine.bundle_digest
    assert watcher.poll() is False
    contracts = bundle_dir / "data" / "contracts.yaml"
    text = contracts.read_text()
    contracts.write_text(text[: len(text) // 2])  # caught half written: may even parse
    assert watcher.poll() is False and engine.bundle_digest == before
    _deny_everything(bundle_dir)
    contracts.write_text(text)  # the writer finishes, and a new module lands
    assert watcher.poll() is False and engine.bundle_digest == before
    assert watcher.poll() is True and engine.bundle_digest != before
    assert asyncio.run(engine.decide(base_input)).rule_ids == ("SG-FREEZE-001",)
    (bundle_dir / "data" / "dates.yaml").write_text("reviewed: 2025-01-01\n")
    assert watcher.poll() is False and watcher.poll() is False  # never raises
    assert isinstance(watcher.last_error, PolicyBundleError)


def test_watcher_reloads_changed_bundle_and_keeps_old_on_error(
    bundle_dir: Path, base_input: dict[str, Any]
) -> None:
    engine = RegopyEngine(load_bundle(bundle_dir), timeout_s=5.0)
    watcher = BundleWatcher(engine, bundle_dir, interval_s=0.01)
    assert watcher.check() is False
    _deny_everything(bundle_dir)
    assert watcher.check() is True
    assert asyncio.run(engine.decide(base_input)).rule_ids == ("SG-FREEZE-001",)
    digest = engine.bundle_digest
    (bundle_dir / "rego" / "broken.rego").write_text("package sealgate.authz\nallow if {\n")

    async def poll() -> None:
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(poll())
    assert isinstance(watcher.last_error, PolicyBundleError)
    assert engine.bundle_digest == digest


class _FlakyFakeOPAServer(FakeOPAServer):
    """Speaks OPA's APIs, or answers every request 503 while ``down`` (fault injection)."""

    down = False

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.down:
            return 503, b'{"code": "unavailable"}'
        return super().answer(method, path, body)


def test_a_bundle_reverted_before_it_reached_opa_is_not_installed(
    bundle_dir: Path, base_input: dict[str, Any]
) -> None:
    """A changed bundle waits to be installed while the OPA server is down; the operator
    reverts the directory meanwhile. The revert is handed to the engine, so the bundle no
    longer on disk never decides (the watcher compared with the installed digest: no change)."""
    original = load_bundle(bundle_dir)

    async def scenario(server: _FlakyFakeOPAServer) -> tuple[str, tuple[str, ...]]:
        engine = OPAEngine(server.url, original, timeout_s=2.0)
        watcher = BundleWatcher(engine, bundle_dir)
        try:
            await engine.settle()
            freeze = bundle_dir / "rego" / "freeze.rego"
            _deny_everything(bundle_dir)
            assert (watcher.poll(), watcher.poll()) == (False, True)
            server.down = True
            with pytest.raises(PolicyUnavailable):
                await engine.settle()
            server.down = False
            freeze.unlink()
            assert (watcher.poll(), watcher.poll()) == (False, True)
            decision = await engine.decide(base_input)
            return decision.bundle_digest, decision.rule_ids
        finally:
            await engine.aclose()

    with _FlakyFakeOPAServer() as server:
        digest, rules = asyncio.run(scenario(server))
    assert digest == original.digest and rules == ()
