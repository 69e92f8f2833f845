"""OPAEngine (the ``opa`` engine) against stand-in OPA servers on loopback (``opa_servers``):
its client protocol (queries, bundle installation, revision checks) and failing closed on
faults. The stand-ins evaluate with regopy, not OPA: OPA's own evaluation of the bundle is
tested in ``test_opa_evaluator``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from policy import OPAEngine, PolicyBundle, PolicyError, PolicyUnavailable, RegopyEngine, load_bundle
from policy._opa import POLICY_PREFIX, QUERY, REVISION, opa_policies

from .conftest import load_cases, patched
from .opa_servers import FakeOPAServer, FaultInjectingOPAServer

BASE, CASES = load_cases()
SAMPLE = [c for c in CASES if not c.get("input_error")][::4]


async def _decide_all(engine: OPAEngine, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return [(await engine.decide(doc)).to_dict() for doc in docs]
    finally:
        await engine.aclose()


def test_opa_engine_protocol_round_trips_decisions(bundle: PolicyBundle,
                                                  engine: RegopyEngine) -> None:
    """The client side of OPA's REST API, against ``FakeOPAServer``: one ad-hoc query per
    decision, with the documented body; the bundle installed as these policies and this data;
    each answer read back into the decision the fake's evaluator (regopy) made. Equal to the
    ``regopy`` engine's decisions, that shows the input and the answer cross the protocol
    unchanged; it says nothing about OPA's own evaluation of the bundle."""
    docs = [patched(BASE, c["patch"]) for c in SAMPLE]
    with FakeOPAServer() as server:
        opa = OPAEngine(server.url, bundle, timeout_s=2.0)
        got = asyncio.run(_decide_all(opa, docs))
        assert len(server.queries) == len(docs)
        assert server.queries[0] == {"query": QUERY, "input": docs[0]}
        # What the server holds is what the engine installed: these modules, this data.
        assert server.policies == {POLICY_PREFIX + package: source
                                   for package, source in opa_policies(bundle).items()}
        assert server.data == {**bundle.data, REVISION: {"digest": bundle.digest,
                                                         "data_keys": sorted(bundle.data)}}
    want = [asyncio.run(engine.decide(doc)).to_dict() for doc in docs]
    assert got == want
    assert {d["allow"] for d in got} == {True, False}


@pytest.mark.parametrize("fault", ["500", "garbage", "undefined"])
def test_bad_answers_fail_closed(fault: str, bundle: PolicyBundle) -> None:
    with FaultInjectingOPAServer(fault) as server:  # type: ignore[arg-type]
        opa = OPAEngine(server.url, bundle, timeout_s=1.0)
        with pytest.raises(PolicyUnavailable) as info:
            asyncio.run(_decide_all(opa, [BASE]))
    assert str(info.value).startswith("policy_unavailable: ")


def test_hanging_server_fails_closed_within_timeout(bundle: PolicyBundle) -> None:
    with FaultInjectingOPAServer("hang", hang_s=2.0) as server:
        opa = OPAEngine(server.url, bundle, timeout_s=0.2)
        start = time.monotonic()
        with pytest.raises(PolicyUnavailable):
            asyncio.run(_decide_all(opa, [BASE]))
        assert time.monotonic() - start < 1.8  # the server hangs 2 s: the 0.2 s timeout ended it


def test_unreachable_server_fails_closed(bundle: PolicyBundle) -> None:
    with FaultInjectingOPAServer("500") as server:
        url = server.url
    with pytest.raises(PolicyUnavailable):
        asyncio.run(_decide_all(OPAEngine(url, bundle, timeout_s=0.5), [BASE]))


@pytest.mark.parametrize("url", ["ftp://opa:8181", "http://opa:8181/v1/data", "opa:8181",
                                 "http://opa:port", "http://[::1"])
def test_bad_urls_rejected(url: str, bundle: PolicyBundle) -> None:
    with pytest.raises(PolicyError):
        OPAEngine(url, bundle)


def _weakened(bundle_dir: Path) -> PolicyBundle:
    """The bundle with SG-RETENTION-001 gone and one module fewer: what an edit of the policy
    volume would leave."""
    (bundle_dir / "rego" / "enclave.rego").unlink()
    retention = bundle_dir / "rego" / "retention.rego"
    retention.write_text(retention.read_text().replace("SG-RETENTION-001", "SG-RETENTION-999"))
    return load_bundle(bundle_dir)


def test_decisions_report_only_the_bundle_the_server_holds(bundle: PolicyBundle,
                                                           bundle_dir: Path) -> None:
    """Whatever else writes to the server (another engine installing another bundle, a
    restart that empties it), a decision is made on this engine's bundle and reports its
    digest; a reload installs the new bundle whole, stale modules removed, before any
    decision reports it."""
    weak = _weakened(bundle_dir)
    doc = patched(BASE, {"backend.retention_tier": "none"})

    async def scenario(url: str, server: FakeOPAServer) -> None:
        opa, other = OPAEngine(url, bundle, timeout_s=2.0), OPAEngine(url, weak, timeout_s=2.0)
        try:
            await opa.settle()
            assert server.data[REVISION]["digest"] == bundle.digest
            await other.settle()  # the server now holds the weakened bundle
            decision = await opa.decide(doc)
            assert decision.bundle_digest == bundle.digest
            assert [d.rule for d in decision.deny] == ["SG-RETENTION-001"]
            assert server.data[REVISION]["digest"] == bundle.digest  # installed again
            server.policies.clear()
            server.data.clear()  # a restart
            assert (await opa.decide(doc)).bundle_digest == bundle.digest
            opa.reload(weak)
            assert opa.bundle_digest == bundle.digest  # until the server holds the new one
            decision = await opa.decide(doc)
            assert (decision.bundle_digest, opa.bundle_digest) == (weak.digest, weak.digest)
            assert [d.rule for d in decision.deny] == ["SG-RETENTION-999"]
            assert "# rego/enclave.rego" not in server.policies[POLICY_PREFIX + "sealgate.authz"]
        finally:
            await opa.aclose()
            await other.aclose()

    with FakeOPAServer() as server:
        asyncio.run(scenario(server.url, server))


class _ForgetfulFakeOPAServer(FakeOPAServer):
    """Takes every write, but its revision document never changes: a server that does not
    hold what it is given."""

    def _data(self, method: str, key: str, body: bytes) -> tuple[int, bytes]:
        if key == REVISION and method == "PUT":
            self.data[key] = {"digest": "sha256:" + "0" * 64, "data_keys": []}
            return 204, b""
        return super()._data(method, key, body)


def test_a_server_that_does_not_hold_the_bundle_fails_closed(bundle: PolicyBundle) -> None:
    with _ForgetfulFakeOPAServer() as server:
        opa = OPAEngine(server.url, bundle, timeout_s=2.0)
        with pytest.raises(PolicyUnavailable, match="does not hold"):
            asyncio.run(_decide_all(opa, [BASE]))
        assert len(server.queries) == 2  # once, then once more after installing it again


class _FailingOnceFakeOPAServer(FakeOPAServer):
    """Refuses the revision write of one bundle (``refused``), once: an install that stops half
    way."""

    refused = ""

    def _data(self, method: str, key: str, body: bytes) -> tuple[int, bytes]:
        if self.refused and key == REVISION and method == "PUT" and \
                json.loads(body)["digest"] == self.refused:
            self.refused = ""
            return 500, b'{"code": "internal_error", "message": "write failed"}'
        return super()._data(method, key, body)


def test_an_install_that_stops_half_way_leaves_no_data_behind(bundle: PolicyBundle,
                                                               bundle_dir: Path) -> None:
    """The cleared revision still names every key written: the next install removes a key the
    failed one wrote, so no decision reads data outside the bundle it reports."""
    (bundle_dir / "data" / "overrides.yaml").write_text("overrides:\n  allow_everything: true\n")
    extra = load_bundle(bundle_dir)

    async def scenario(url: str, server: _FailingOnceFakeOPAServer) -> None:
        opa = OPAEngine(url, bundle, timeout_s=2.0)
        try:
            await opa.settle()
            server.refused = extra.digest
            opa.reload(extra)
            with pytest.raises(PolicyUnavailable):
                await opa.settle()  # the data went in, the revision did not
            assert "overrides" in server.data
            opa.reload(bundle)
            await opa.settle()
            assert set(server.data) == {*bundle.data, REVISION}
            assert (await opa.decide(BASE)).bundle_digest == bundle.digest
        finally:
            await opa.aclose()

    with _FailingOnceFakeOPAServer() as server:
        asyncio.run(scenario(server.url, server))


def test_a_packages_modules_are_installed_as_one_policy_with_their_imports(bundle_dir: Path) -> None:
    """OPA compiles what it holds at every write: a package's files, which use each other's
    rules, go in as one policy, with every file's imports at its head."""
    (bundle_dir / "rego" / "zz_extra.rego").write_text(
        "# an operator's addition\npackage sealgate.authz\n\nimport rego.v1\n\n"
        "extra_note := count(deny)\n")
    policies = opa_policies(load_bundle(bundle_dir))
    assert list(policies) == ["sealgate.authz"]
    head = policies["sealgate.authz"].splitlines()[:2]
    assert head == ["package sealgate.authz", "import rego.v1"]
    assert "# rego/zz_extra.rego\nextra_note := count(deny)" in policies["sealgate.authz"]
    with FakeOPAServer() as server:  # refuses what would not compile, as OPA does
        opa = OPAEngine(server.url, load_bundle(bundle_dir), timeout_s=2.0)
        asyncio.run(_decide_all(opa, [BASE]))
        assert list(server.policies) == [POLICY_PREFIX + "sealgate.authz"]
