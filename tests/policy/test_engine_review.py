"""Engines and bundles at their edges: what a bundle holds is what the engines evaluate, a bundle
that cannot be read is refused without stopping the watcher, and a closed engine decides
nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from policy import (
    BundleWatcher,
    OPAEngine,
    PolicyBundle,
    PolicyBundleError,
    PolicyInput,
    PolicyUnavailable,
    RegopyEngine,
    load_bundle,
)
from tests.policy.conftest import patched

from .opa_servers import FakeOPAServer

# A rule that denies every `store: true`, in a module of its own.
STORE_RULE = ('deny contains {"rule": "SG-STORE-901", "message": "store"} '
              "if input.request.store == true\n")

# A contract that allows less than `default`: one model, small token limits.
NARROW_CONTRACT = """
  {name}:
    models: ["qwen2.5-7b-instruct"]
    regions: ["eu-west-1"]
    max_tokens: 16
    max_n: 1
    allow_streaming: false
    allow_contractual_zero: false
    rewrite_store: false
"""


@pytest.mark.parametrize("before", ["\x00\n", "# a note\n\x00", "default x := 1\x00\n"])
def test_a_module_with_a_nul_is_refused(bundle_dir: Path, before: str) -> None:
    # rego-cpp reads a module up to its first NUL: the rule after it was digested but never
    # evaluated, and a `store: true` request was allowed.
    (bundle_dir / "rego" / "store.rego").write_text(f"package sealgate.authz\n{before}{STORE_RULE}")
    with pytest.raises(PolicyBundleError, match="NUL"):
        load_bundle(bundle_dir)


def test_the_same_module_without_the_nul_denies(bundle_dir: Path, base_input: dict[str, Any]) -> None:
    (bundle_dir / "rego" / "store.rego").write_text(f"package sealgate.authz\n\n{STORE_RULE}")
    engine = RegopyEngine(load_bundle(bundle_dir))
    try:
        decision = engine.decide_sync(patched(base_input, {"request.store": True}))
        assert "SG-STORE-901" in decision.rule_ids
    finally:
        asyncio.run(engine.aclose())


@pytest.mark.parametrize("name", ["no", "on", "yes", "off", "1", "null", "1.5"])
def test_a_data_key_that_yaml_reads_as_no_string_is_refused(
    bundle_dir: Path, base_input: dict[str, Any], name: str
) -> None:
    # YAML reads `no:` as false; the engines then looked the contract up as "false", and the
    # tenant named `no` was held to the wider `default` contract instead of its own.
    contracts = bundle_dir / "data" / "contracts.yaml"
    contracts.write_text(contracts.read_text() + NARROW_CONTRACT.format(name=name))
    with pytest.raises(PolicyBundleError, match="not JSON"):
        load_bundle(bundle_dir)
    # Quoted, the key is the tenant's name, and its own contract holds.
    contracts.write_text(contracts.read_text().replace(f"\n  {name}:\n", f'\n  "{name}":\n'))
    engine = RegopyEngine(load_bundle(bundle_dir))
    try:
        decision = engine.decide_sync(patched(base_input, {"tenant.name": name}))
        assert {"SG-MODEL-001", "SG-TOKENS-001"} <= set(decision.rule_ids)
    finally:
        asyncio.run(engine.aclose())


def test_a_nested_non_string_key_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "data" / "teams.yaml").write_text("teams:\n  - {ops: [1, {2: x}]}\n")
    with pytest.raises(PolicyBundleError, match="not JSON"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name, text", [
    ("deep.json", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("deep.yaml", "x: " + "[" * 100_000 + "]" * 100_000 + "\n"),
])
def test_a_deeply_nested_data_file_is_refused_and_polling_goes_on(
    bundle_dir: Path, bundle: PolicyBundle, name: str, text: str
) -> None:
    # It was a RecursionError: out of load_bundle, and out of BundleWatcher.poll.
    (bundle_dir / "data" / name).write_text(text)
    _refused_and_polling_goes_on(bundle, bundle_dir)


def test_a_bundle_path_in_a_symlink_loop_is_refused_and_polling_goes_on(
    tmp_path: Path, bundle: PolicyBundle
) -> None:
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    _refused_and_polling_goes_on(bundle, loop)


def _refused_and_polling_goes_on(bundle: PolicyBundle, path: Path) -> None:
    """Loading ``path`` is a bundle error, and a watcher on it reports that error and keeps
    the bundle in force."""
    with pytest.raises(PolicyBundleError):
        load_bundle(path)
    engine = RegopyEngine(bundle)
    try:
        watcher = BundleWatcher(engine, path)
        assert watcher.poll() is False
        assert isinstance(watcher.last_error, PolicyBundleError)
        assert engine.bundle_digest == bundle.digest
    finally:
        asyncio.run(engine.aclose())


def test_a_closed_regopy_engine_decides_nothing_even_from_its_cache(
    bundle: PolicyBundle, base_input: dict[str, Any]
) -> None:
    engine = RegopyEngine(bundle, timeout_s=2.0, cache_size=16)
    key = PolicyInput.from_dict(base_input)

    async def scenario() -> None:
        assert (await engine.decide(key)).allow
        assert engine.cached(key) is not None
        await engine.aclose()
        assert engine.cached(key) is None
        with pytest.raises(PolicyUnavailable, match="closed"):
            await engine.decide(key)

    asyncio.run(scenario())
    with pytest.raises(PolicyUnavailable, match="closed"):
        engine.decide_sync(key)


def test_a_closed_opa_engine_decides_nothing(bundle: PolicyBundle, base_input: dict[str, Any]) -> None:
    async def scenario(url: str) -> None:
        engine = OPAEngine(url, bundle, timeout_s=2.0)
        assert (await engine.decide(base_input)).allow
        await engine.aclose()
        # It opened a new connection that nothing would close, and decided.
        with pytest.raises(PolicyUnavailable, match="closed"):
            await engine.decide(base_input)
        await engine.aclose()

    with FakeOPAServer() as server:
        asyncio.run(scenario(server.url))
        assert len(server.queries) == 1


@pytest.mark.parametrize("rule", [
    "now := time.now_ns()",
    'token := io.jwt.decode_verify("a.b.c", {"secret": "s"})',
])
def test_a_bundle_that_reads_the_clock_is_never_cached(bundle_dir: Path, base_input: dict[str, Any],
                                                       rule: str) -> None:
    """Equal inputs need not get equal decisions when the policy reads the clock (a token's
    expiry): such a bundle is evaluated every time; the shipped one is cached."""
    shipped = RegopyEngine(load_bundle(bundle_dir))
    (bundle_dir / "rego" / "clock.rego").write_text(f"package sealgate.authz\n\n{rule}\n")
    clocked = RegopyEngine(load_bundle(bundle_dir))
    try:
        doc = PolicyInput.from_dict(base_input)
        for engine in (shipped, clocked):
            engine.decide_sync(doc)
        assert shipped.cached(doc) is not None
        assert clocked.cached(doc) is None
    finally:
        for engine in (shipped, clocked):
            asyncio.run(engine.aclose())
