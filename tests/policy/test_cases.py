"""The decision table (cases.yaml) on the embedded engine, documents checked against the schemas."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import pytest

from policy import PolicyInput, PolicyInputError, RegopyEngine
from policy._regopy import _Compiled

from .conftest import load_cases, patched, schema

BASE, CASES = load_cases()
RULE_IDS = {
    "SG-INPUT-001",
    "SG-CONTRACT-001",
    "SG-CHANNEL-001",
    "SG-RETENTION-001",
    "SG-STORE-001",
    "SG-STORE-002",
    "SG-STORE-003",
    "SG-STORE-004",
    "SG-STORE-005",
    "SG-STORE-006",
    "SG-TRAIN-001",
    "SG-TRAIN-002",
    "SG-TRAIN-003",
    "SG-TRAIN-004",
    "SG-TRAIN-005",
    "SG-TRAIN-006",
    "SG-ENDPOINT-001",
    "SG-MODEL-001",
    "SG-REGION-001",
    "SG-TOKENS-001",
    "SG-TOKENS-002",
    "SG-STREAM-001",
    "SG-ENCLAVE-001",
    "SG-ENCLAVE-002",
}


def _check(case: dict[str, Any], decision: dict[str, Any]) -> None:
    assert decision["allow"] is case["allow"]
    assert sorted(d["rule"] for d in decision["deny"]) == sorted(case["deny"])
    if "obligations" in case:
        assert decision["obligations"] == case["obligations"]


def test_table_is_large_and_covers_every_rule() -> None:
    assert len(CASES) >= 40
    assert len({c["name"] for c in CASES}) == len(CASES)
    covered = {rule for c in CASES for rule in c["deny"]}
    assert covered == RULE_IDS
    assert any(c["allow"] for c in CASES) and any(len(c["deny"]) > 1 for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_decision_case(case: dict[str, Any], engine: RegopyEngine) -> None:
    doc = patched(BASE, case["patch"])
    if case.get("input_error"):
        with pytest.raises(PolicyInputError):
            asyncio.run(engine.decide(doc))
        # The Rego rules deny the raw document on their own too.
        _check(case, _Compiled(engine.bundle, 0).evaluate_here(doc).to_dict())
        return
    jsonschema.validate(doc, schema("input"))
    decision = asyncio.run(engine.decide(doc)).to_dict()
    jsonschema.validate(decision, schema("decision"))
    assert decision["bundle_digest"] == engine.bundle_digest
    _check(case, decision)
    # The typed builder produces the same document, and the same decision.
    assert PolicyInput.from_dict(doc).to_dict() == doc
