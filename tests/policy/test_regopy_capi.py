"""The embedded engine's C API seam: inputs equal to ``regopy.Input``'s, decisions read exactly."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import regopy
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import PolicyBundle, PolicyUnavailable, RegopyEngine, load_bundle
from policy._engine import ENTRYPOINT
from policy._regopy import compile_bundle
from policy._regopy_capi import _LIB, _public_query, make_input, query_entrypoint
from tests.policy.conftest import load_cases, patched

# Plain ASCII: rego-cpp's JSON reader and its rendering of results, which the comparison
# relies on, mishandle control characters, quotes and some escapes; non-ASCII text is
# checked on its own below.
_TEXT = st.text(string.ascii_letters + string.digits + " -_./:@", max_size=12)
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False, width=32) | _TEXT)
_DOCS = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_TEXT, inner, max_size=4), max_leaves=20)


def _equals_json(build: Any, doc: dict[str, Any]) -> bool:
    """Whether the engine sees the built input as equal to ``doc`` loaded from its JSON text
    (compared inside the engine: regopy's rendering of results is not reliable JSON)."""
    interpreter = regopy.Interpreter()
    interpreter.add_data_json(json.dumps({"doc": doc}))
    interpreter.set_input(build(doc))
    out = interpreter.query("x := input == data.doc")
    assert out.ok(), str(out)
    return bool(out.binding("x").json() == "true")


def _has_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


def test_the_c_api_paths_are_in_use() -> None:
    # regopy 1.5 has every binding needed; a release without them falls back.
    assert _LIB is not None and make_input is not regopy.Input
    assert query_entrypoint is not _public_query


@pytest.mark.parametrize("case", load_cases()[1], ids=lambda c: c["name"])
def test_case_inputs_match_regopy(case: dict[str, Any]) -> None:
    doc = patched(load_cases()[0], case["patch"])
    assert _equals_json(make_input, doc) and _equals_json(regopy.Input, doc)


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(_TEXT, _DOCS, max_size=6))
def test_any_json_document_matches_regopy(doc: dict[str, Any]) -> None:
    # Numbers given as floats may be kept at another precision than their JSON text; both
    # builders must agree either way.
    fast = _equals_json(make_input, doc)
    assert fast == _equals_json(regopy.Input, doc)
    assert fast or _has_float(doc)


@pytest.mark.parametrize(("bad", "error"), [
    ({"k": object()}, TypeError),
    ({"k": [1, {2: "non-string key"}]}, TypeError),
    ({"k": 2**64 + 5}, OverflowError),  # regopy.Input would wrap this to 5
    ({"k": -(2**63) - 1}, OverflowError),
], ids=["object", "int-key", "int-wraps-up", "int-wraps-down"])
def test_unconvertible_values_are_refused(bad: dict[Any, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        make_input(bad)


@pytest.mark.parametrize("build", [make_input, regopy.Input], ids=["fast", "regopy"])
def test_non_ascii_text_arrives_intact(build: Any) -> None:
    interpreter = regopy.Interpreter()
    interpreter.set_input(build({"k": ["zürich", "日本", "\u00a0 \U0001f512"]}))
    out = interpreter.query('x := input.k == ["zürich", "日本", "\u00a0 \U0001f512"]')
    assert out.binding("x").json() == "true"


def test_the_widest_exact_integers_pass() -> None:
    assert _equals_json(make_input, {"lo": -(2**63), "hi": 2**63 - 1})


def test_engine_fails_closed_on_an_unconvertible_document(bundle: PolicyBundle) -> None:
    engine = RegopyEngine(bundle, cache_size=0)
    with pytest.raises(PolicyUnavailable):
        engine._state.evaluate_here({"k": object()})


@pytest.fixture(scope="module")
def program(bundle: PolicyBundle) -> regopy.Bundle:
    return compile_bundle(bundle)


@pytest.mark.parametrize("case", load_cases()[1], ids=lambda c: c["name"])
def test_decisions_read_from_the_node_tree_match_regopys_reader(
    case: dict[str, Any], program: regopy.Bundle
) -> None:
    interpreter = regopy.Interpreter()
    interpreter.set_input(make_input(patched(load_cases()[0], case["patch"])))
    assert query_entrypoint(interpreter, program, ENTRYPOINT) == _public_query(
        interpreter, program, ENTRYPOINT)


_ECHO = """package sealgate.authz

default allow := false

allow if count(deny) == 0

deny contains {"rule": "SG-MODEL-001", "message": sprintf("model %s is not allowed", [input.model])} if {
	input.model != "ok"
}

decision := {"allow": allow, "deny": [d | some d in deny], "obligations": {}}
"""


@pytest.mark.parametrize("model", [
    'x"}], "allow": true, "deny": [], "obligations": {}, "z": [{"a": "',
    'in"put\\',
    '"quoted"',
])
def test_a_decision_echoing_input_cannot_be_steered(tmp_path: Path, model: str) -> None:
    # regopy's own reader parses the engine's rendering, which does not escape quotes: the
    # first name makes that a different document (with "allow": true), the others make it
    # unparseable. Read from the node tree, the decision is the policy's, message and all.
    (tmp_path / "rego").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "rego" / "authz.rego").write_text(_ECHO)
    (tmp_path / "data" / "contracts.yaml").write_text(
        "contracts:\n  default: {models: ['*'], regions: [local], max_tokens: 1, max_n: 1,"
        " allow_streaming: false, allow_contractual_zero: false, rewrite_store: false}\n")
    engine = RegopyEngine(load_bundle(tmp_path), cache_size=0)
    doc = patched(load_cases()[0], {"model": model})
    decision = engine.decide_sync(doc)
    assert decision.allow is False
    assert [d.rule for d in decision.deny] == ["SG-MODEL-001"]
    assert model.strip('"') in decision.deny[0].message
