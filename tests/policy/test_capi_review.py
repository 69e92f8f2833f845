"""The fallback input builder (regopy's public API, for a release without the C API bindings)
refuses what the C API path refuses: regopy alone would let the policy decide on a string cut
at its NUL or an integer wrapped to another, while the request carries the original."""

from __future__ import annotations

import json
from typing import Any

import pytest
import regopy

from policy import PolicyBundle, PolicyUnavailable, RegopyEngine
from policy._regopy_capi import _public_input, make_input
from tests.policy.conftest import load_cases, patched

LOSSY = [
    ({"model": "ok\x00 anything"}, ValueError),  # regopy.Input: the policy sees "ok"
    ({"k": [{"key\x00": 1}]}, ValueError),
    ({"k": 2**64 + 5}, OverflowError),  # regopy.Input: the policy sees 5
    ({"k": {"n": -(2**63) - 1}}, OverflowError),
    ({"k": (1, {2: "x"})}, TypeError),  # regopy.Input: a number key
]


@pytest.mark.parametrize(("doc", "error"), LOSSY, ids=["nul", "nul-key", "wide", "wide-down", "int-key"])
def test_the_fallback_refuses_what_the_c_api_path_refuses(doc: dict[str, Any],
                                                          error: type[Exception]) -> None:
    with pytest.raises(error):
        make_input(doc)
    with pytest.raises(error):
        _public_input(doc)


def test_the_fallback_builds_what_regopy_builds() -> None:
    doc = patched(load_cases()[0], {"extra": [1, -(2**63), 2.5, None, True, ("t", {"u": "v"})]})
    interpreter = regopy.Interpreter()
    interpreter.add_data_json(json.dumps({"doc": doc}))
    interpreter.set_input(_public_input(doc))
    assert interpreter.query("x := input == data.doc").binding("x").json() == "true"


def test_an_engine_on_the_fallback_fails_closed_on_a_lossy_input(
        bundle: PolicyBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("policy._regopy.make_input", _public_input)
    engine = RegopyEngine(bundle, cache_size=0)
    doc = patched(load_cases()[0], {})
    engine._state.evaluate_here(doc)  # a proper input decides
    for bad, _ in LOSSY:
        with pytest.raises(PolicyUnavailable):
            engine._state.evaluate_here({**doc, **bad})
