"""The shipped bundle on OPA's own evaluator (``OPAEvaluatorServer``: OPA v1.20.2's Go ``rego``
package behind the REST stand-in), through the ``opa`` engine: the decision table, the bundle's
Rego unit tests and ``sealgate policy eval --engine opa``. The ``regopy`` engine's decisions are
rego-cpp's; these are OPA's, on the same files, and they must agree."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from policy import OPAEngine, PolicyBundle, RegopyEngine
from policy._opa import QUERY
from proxy.cli import main
from tests.conftest import need

from .conftest import load_cases, patched
from .opa_servers import HAVE_OPA_EVALUATOR, OpaEngine, OPAEvaluatorServer

BASE, CASES = load_cases()
_MISSING = "OPA's evaluator (opa-golib-python-bindings) is not installed: run make"


@pytest.fixture(autouse=True)
def _evaluator() -> None:
    need(HAVE_OPA_EVALUATOR, _MISSING)


def _check(case: dict[str, Any], decision: dict[str, Any]) -> None:
    assert decision["allow"] is case["allow"], case["name"]
    assert sorted(d["rule"] for d in decision["deny"]) == sorted(case["deny"]), case["name"]
    if "obligations" in case:
        assert decision["obligations"] == case["obligations"], case["name"]


def test_opa_decides_the_whole_table_as_it_says_and_as_regopy_does(bundle: PolicyBundle,
                                                                   engine: RegopyEngine) -> None:
    """Every case of cases.yaml: OPA's decision is the expected one and the embedded engine's,
    message for message. Documents the gateway never builds (``input_error``) are sent to the
    server as they are, since the engine refuses them first: OPA's rules deny those too."""
    valid = [c for c in CASES if not c.get("input_error")]
    raw = [c for c in CASES if c.get("input_error")]
    assert len(valid) >= 40 and raw

    async def scenario(url: str, server: OPAEvaluatorServer) -> list[dict[str, Any]]:
        opa = OPAEngine(url, bundle, timeout_s=10.0)
        try:
            decided = [(await opa.decide(patched(BASE, c["patch"]))).to_dict() for c in valid]
        finally:
            await opa.aclose()
        for case in raw:  # the bundle is installed now: ask the server directly
            status, payload = server.evaluate(QUERY, patched(BASE, case["patch"]))
            assert status == 200
            (result,) = json.loads(payload)["result"]
            _check(case, result["decision"])
        return decided

    with OPAEvaluatorServer() as server:
        got = asyncio.run(scenario(server.url, server))
    for case, decision in zip(valid, got, strict=True):
        assert decision["bundle_digest"] == bundle.digest
        _check(case, decision)
    want = [asyncio.run(engine.decide(patched(BASE, c["patch"]))).to_dict() for c in valid]
    assert got == want


def test_bundle_unit_tests_pass_on_opa(bundle: PolicyBundle) -> None:
    """``*_test.rego`` (what ``sealgate policy test`` runs on rego-cpp) on OPA's evaluator:
    every ``test_`` rule is true, as ``opa test`` would report."""
    engine = OpaEngine()
    try:
        for path, source in {**bundle.modules, **bundle.tests}.items():
            engine.add_policy(path, source)
        engine.add_data(dict(bundle.data))
        ran = 0
        for source in bundle.tests.values():
            package = re.search(r"^package\s+(\S+)", source, re.MULTILINE)
            assert package is not None
            for name in dict.fromkeys(re.findall(r"^(test_\w+)\b", source, re.MULTILINE)):
                result = engine.eval_query(f"x = data.{package.group(1)}.{name}")
                assert result == [{"x": True}], f"{package.group(1)}.{name} fails on OPA"
                ran += 1
    finally:
        engine.close()
    assert ran >= 20


def test_policy_eval_cli_through_opa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sealgate policy eval --engine opa``: the four acceptance requests, decided by OPA."""
    requests = {
        "store": ({"request.store": True}, ["SG-STORE-001"]),
        "fine_tuning": ({"endpoint.path": "/v1/fine_tuning/jobs"}, ["SG-TRAIN-001"]),
        "plaintext": ({"channel": "plaintext"}, ["SG-CHANNEL-001"]),
        "none_tier": ({"backend.retention_tier": "none"}, ["SG-RETENTION-001"]),
    }
    with OPAEvaluatorServer() as server:
        for name, (patch, rules) in requests.items():
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(patched(BASE, patch)))
            status = main(["policy", "eval", "--input", str(path), "--engine", "opa",
                           "--opa-url", server.url])
            decision = json.loads(capsys.readouterr().out)
            assert (status, decision["allow"]) == (1, False), name
            assert [d["rule"] for d in decision["deny"]] == rules, name
        allowed = tmp_path / "allowed.json"
        allowed.write_text(json.dumps(BASE))
        assert main(["policy", "eval", "--input", str(allowed), "--engine", "opa",
                     "--opa-url", server.url]) == 0
        assert json.loads(capsys.readouterr().out)["allow"] is True
    assert server.queries  # every decision above was a query to OPA


def test_server_refuses_a_policy_opa_does_not_compile() -> None:
    """The stand-in's write check is OPA's compiler: a rule with an unsafe variable is refused
    (400), and the modules held before stay."""
    good = b"package sealgate.probe\n\nallow if input.x == 1\n"
    bad = b"package sealgate.probe\n\nallow if undefined_name == 1\n"
    with OPAEvaluatorServer() as server:
        assert server.answer("PUT", "/v1/policies/probe", good)[0] == 200
        status, _ = server.answer("PUT", "/v1/policies/probe", bad)
        assert status == 400
        assert server.policies == {"probe": good.decode()}
        status, payload = server.evaluate("allow = data.sealgate.probe.allow", {"x": 1})
        assert (status, json.loads(payload)) == (200, {"result": [{"allow": True}]})


def _without(doc: dict[str, Any], dotted: str) -> dict[str, Any]:
    out = patched(doc, {})
    *parents, leaf = dotted.split(".")
    node = out
    for part in parents:
        node = node[part]
    del node[leaf]
    return out


# Every input field a rule reads (docs/policy.md, "Input document"), and the rules that deny
# a document without it. The gateway never builds such a document; the rules deny it anyway.
MISSING_INPUT = {
    "channel": ["SG-CHANNEL-001"],
    "tenant": ["SG-CONTRACT-001", "SG-MODEL-001", "SG-REGION-001", "SG-TOKENS-001"],
    "tenant.name": ["SG-CONTRACT-001", "SG-MODEL-001", "SG-REGION-001", "SG-TOKENS-001"],
    "endpoint": ["SG-ENDPOINT-001", "SG-RETENTION-001"],
    "endpoint.method": ["SG-ENDPOINT-001"],
    "endpoint.path": ["SG-ENDPOINT-001", "SG-RETENTION-001"],
    "model": ["SG-MODEL-001"],
    "request.stream": ["SG-STREAM-001"],
    "request.store": ["SG-STORE-001"],
    "request.max_tokens": ["SG-TOKENS-001"],
    "request.n": ["SG-TOKENS-002"],
    "request.previous_response_id": ["SG-STORE-002"],
    "request.conversation": ["SG-STORE-003"],
    "request.metadata_keys": ["SG-INPUT-001"],
    "request.stored_references": ["SG-STORE-006"],
    "backend": ["SG-RETENTION-001"],
    "backend.retention_tier": ["SG-RETENTION-001"],
    "enclave": ["SG-ENCLAVE-001", "SG-ENCLAVE-002"],
    "enclave.platform": ["SG-ENCLAVE-001"],
    "enclave.simulated": ["SG-ENCLAVE-001"],
    "enclave.debug": ["SG-ENCLAVE-002"],
    "time": ["SG-CONTRACT-001"],
    "deployment.mode": ["SG-INPUT-001"],
    "deployment.region": ["SG-REGION-001"],
}
# Contract fields whose absence (the bundle loader refuses such a contract) the rules deny.
MISSING_CONTRACT = {"models": ["SG-MODEL-001"], "regions": ["SG-REGION-001"],
                    "max_tokens": ["SG-TOKENS-001"]}


def _decisions(bundle: PolicyBundle, doc: dict[str, Any],
               contracts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The decision document of OPA's evaluator and of rego-cpp (regopy) on the raw ``doc``."""
    import regopy

    data = {**json.loads(json.dumps(bundle.data, default=dict)), "contracts": contracts}
    engine = OpaEngine()
    try:
        for path, source in bundle.modules.items():
            engine.add_policy(path, source)
        engine.add_data(data)
        (opa,) = engine.eval_query("d = data.sealgate.authz.decision", doc)
    finally:
        engine.close()
    interpreter = regopy.Interpreter()
    for path, source in bundle.modules.items():
        interpreter.add_module(path, source)
    interpreter.add_data_json(json.dumps(data))
    interpreter.set_input(regopy.Input(doc))
    out = interpreter.query("d = data.sealgate.authz.decision")
    assert out.ok()
    decided = (opa["d"], json.loads(str(out))["bindings"]["d"])
    for decision in decided:  # a set, listed in each engine's own order
        decision["deny"].sort(key=lambda d: (d["rule"], d["message"]))
    return decided


def _contracts(bundle: PolicyBundle) -> dict[str, Any]:
    return json.loads(json.dumps(bundle.data["contracts"], default=dict))


@pytest.mark.parametrize("field", list(MISSING_INPUT))
def test_a_missing_input_field_denies_alike_on_both_engines(field: str, bundle: PolicyBundle) -> None:
    """The policy's promise that a missing field denies holds on OPA too: there a negated
    comparison or call (``not x <= y``) with an undefined operand is undefined, not true,
    so every such check goes through a helper rule (authz.rego)."""
    opa, rego_cpp = _decisions(bundle, _without(BASE, field), _contracts(bundle))
    for decision in (opa, rego_cpp):
        assert decision["allow"] is False
        assert sorted(d["rule"] for d in decision["deny"]) == sorted(MISSING_INPUT[field])
    assert opa == rego_cpp


@pytest.mark.parametrize("field", list(MISSING_CONTRACT))
def test_a_missing_contract_field_denies_alike_on_both_engines(field: str,
                                                               bundle: PolicyBundle) -> None:
    contracts = _contracts(bundle)
    del contracts[BASE["tenant"]["name"]][field]
    opa, rego_cpp = _decisions(bundle, BASE, contracts)
    for decision in (opa, rego_cpp):
        assert decision["allow"] is False
        assert [d["rule"] for d in decision["deny"]] == MISSING_CONTRACT[field]
    assert opa == rego_cpp


@pytest.mark.parametrize(("key", "folded"), [
    ("TRA\u0130N_SET", "train_set"),   # dotted capital I: OPA lowercases it, rego-cpp did not
    ("\ufb01netune", "finetune"),      # the "fi" ligature
    ("\u00c9vals", "evals"),           # precomposed É
    ("E\u0301VAL", "eval"),            # E and a combining acute accent
    ("\uff24\uff41\uff54\uff41\uff53\uff45\uff54", "dataset"),  # full-width letters
])
def test_metadata_keys_are_folded_so_both_engines_match_them(key: str, folded: str,
                                                              bundle: PolicyBundle) -> None:
    from policy import RequestParams

    params = RequestParams.from_body({"metadata": {key: "v", "Run": "w"}})
    assert params.metadata_keys == tuple(sorted((folded, "run")))
    doc = patched(BASE, {"request.metadata_keys": list(params.metadata_keys)})
    for decision in _decisions(bundle, doc, _contracts(bundle)):
        assert decision["allow"] is False
        assert [d["rule"] for d in decision["deny"]] == ["SG-STORE-004"]
