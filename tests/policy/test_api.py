"""Public surface, error codes, input builder and decision document."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import policy
from policy import (
    Decision,
    Denial,
    PolicyError,
    PolicyInput,
    PolicyInputError,
    PolicyUnavailable,
    RequestParams,
)

DIGEST = "sha256:" + "ab" * 32


def test_exported_names_are_exact() -> None:
    assert policy.__all__ == [
        "TENANT_NAME",
        "BundleWatcher",
        "Decision",
        "Denial",
        "OPAEngine",
        "PolicyBundle",
        "PolicyBundleError",
        "PolicyEngine",
        "PolicyError",
        "PolicyInput",
        "PolicyInputError",
        "PolicyUnavailable",
        "RegoTestResult",
        "RegopyEngine",
        "RequestParams",
        "bundle_digest",
        "contract_owner",
        "listing_digest",
        "load_bundle",
        "run_rego_tests",
    ]


def test_policy_never_imports_proxy() -> None:
    for path in Path(policy.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "proxy" or n.startswith("proxy.") for n in names), path


def test_error_codes_and_str() -> None:
    err = PolicyUnavailable("engine down")
    assert isinstance(err, PolicyError)
    assert (err.code, err.status, str(err)) == ("policy_unavailable", 503, "policy_unavailable: engine down")
    assert PolicyInputError("x").code == "invalid_policy_input"


def test_request_params_carry_no_content() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "CANARY-SECRET"}],
        "metadata": {"distill": "CANARY-VALUE"},
        "store": True,
        "stream": True,
        "max_completion_tokens": 50,
        "max_tokens": 10,
        "n": 2,
        "previous_response_id": "resp_1",
    }
    params = RequestParams.from_body(body)
    assert params == RequestParams(
        stream=True,
        store=True,
        max_tokens=50,
        n=2,
        previous_response_id=True,
        metadata_keys=("distill",),
    )
    assert "CANARY" not in repr(params.to_dict())


@pytest.mark.parametrize(("body", "store"), [({}, None), ({"store": False}, False), ({"store": "yes"}, True)])
def test_store_reading_is_conservative(body: dict[str, object], store: bool | None) -> None:
    assert RequestParams.from_body(body).store is store


@pytest.mark.parametrize("body", [{"max_tokens": "10"}, {"n": 1.5}, {"max_output_tokens": True}])
def test_mistyped_limits_rejected(body: dict[str, object]) -> None:
    with pytest.raises(PolicyInputError):
        RequestParams.from_body(body)


@pytest.mark.parametrize("body", [{"max_tokens": "10"}, {"n": 1.5}, {"max_output_tokens": True},
                                  {"max_tokens": 2**64 + 5, "n": -(2**60)}])
def test_lenient_reading_treats_mistyped_limits_as_absent(body: dict[str, object]) -> None:
    params = RequestParams.from_body(body, lenient=True)
    assert params.max_tokens is None and params.n is None


@pytest.mark.parametrize(("content", "stored"), [
    ("CANARY", False),
    ([{"type": "text", "text": "CANARY"}], False),
    ([{"type": "file", "file": {"file_data": "data:application/pdf;base64,CANARY"}}], False),
    ([{"type": "file", "file": {"file_id": "file-CANARY"}}], True),
    ([{"type": "text", "text": "a"}, {"type": "file", "file": {"file_id": "f", "filename": "x"}}], True),
])
def test_stored_references_are_flagged_without_ids(content: object, stored: bool) -> None:
    params = RequestParams.from_body({"messages": [{"role": "user", "content": content}]})
    assert params.stored_references is stored
    assert "CANARY" not in repr(params.to_dict())


@pytest.mark.parametrize(("audio", "stored"), [
    ({"id": "audio_CANARY"}, True), ({"id": ""}, False), (None, False), ("audio_CANARY", False)])
def test_an_earlier_audio_answer_is_a_stored_reference(audio: object, stored: bool) -> None:
    body = {"messages": [{"role": "user", "content": "a"},
                         {"role": "assistant", "audio": audio}, "not a message"]}
    params = RequestParams.from_body(body)
    assert params.stored_references is stored
    assert "CANARY" not in repr(params.to_dict())


@pytest.mark.parametrize(("body", "n"), [
    ({}, None), ({"n": 2}, 2), ({"best_of": 5}, 5), ({"n": 3, "best_of": 4}, 4),
    ({"n": 4, "best_of": 1}, 4)])
def test_best_of_counts_as_choices(body: dict[str, object], n: int | None) -> None:
    assert RequestParams.from_body(body).n == n


def _input(**overrides: object) -> PolicyInput:
    fields: dict[str, object] = dict(
        channel="sealed",
        tenant_id="t",
        tenant_name="acme",
        method="post",
        path="/v1/chat/completions//",
        model="m",
        request=RequestParams(),
        backend_name="vllm",
        retention_tier="attested-zero",
        enclave_platform="tdx",
        enclave_measurement="00",
        enclave_simulated=False,
        enclave_debug=False,
        mode="production",
        region="eu-west-1",
    )
    fields.update(overrides)
    return PolicyInput(**fields)  # type: ignore[arg-type]


def test_input_normalizes_and_round_trips() -> None:
    inp = _input()
    doc = inp.to_dict()
    assert doc["endpoint"] == {"method": "POST", "path": "/v1/chat/completions"}
    assert PolicyInput.from_dict(doc) == inp
    # The path is the decoded request path, without its query: a "?" in it is the client's
    # own (%3F) and stays, or /v1/models%3F/… would be decided as /v1/models.
    assert _input(path="/v1/models?/x#y").to_dict()["endpoint"]["path"] == "/v1/models?/x#y"


@pytest.mark.parametrize(
    "override",
    [
        {"channel": "clear"},
        {"mode": "prod"},
        {"time": "2026-01-01T00:00:00+01:00"},
        {"time": "\uff12\uff10\uff12\uff16-01-01T00:00:00Z"},  # compares after every instant
        {"time": "2026-02-30T00:00:00Z"},
        {"time": "2026-01-01T00:00:00Z\n"},
        {"enclave_debug": "no"},
        {"path": "v1/chat"},
        {"model": 3},
    ],
)
def test_input_rejects_bad_fields(override: dict[str, object]) -> None:
    with pytest.raises(PolicyInputError):
        _input(**override)


def test_from_dict_rejects_unknown_request_keys(base_input: dict[str, object]) -> None:
    base_input["request"] = {**base_input["request"], "messages": []}  # type: ignore[dict-item]
    with pytest.raises(PolicyInputError):
        PolicyInput.from_dict(base_input)


def test_decision_invariants_and_apply() -> None:
    with pytest.raises(PolicyError):
        Decision(True, (Denial("SG-STORE-001", "m"),), MappingProxyType({}), DIGEST)
    doc = {"allow": True, "deny": [], "obligations": {"set_params": {"store": False}}}
    decision = Decision.from_document(doc, DIGEST)
    assert decision.apply({"store": True, "model": "m"}) == {"store": False, "model": "m"}
    assert decision.to_dict() == {**doc, "bundle_digest": DIGEST}


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"allow": True},
        {"allow": "yes", "deny": [], "obligations": {}},
        {"allow": True, "deny": [{"rule": "SG-X-001", "message": "m"}], "obligations": {}},
        {"allow": False, "deny": [{"rule": "bad id", "message": "m"}], "obligations": {}},
        {"allow": True, "deny": [], "obligations": {"log_prompts": True}},
        {"allow": True, "deny": [], "obligations": {"set_params": {"store": [1]}}},
    ],
)
def test_garbage_decisions_fail_closed(doc: object) -> None:
    with pytest.raises(PolicyUnavailable):
        Decision.from_document(doc, DIGEST)


@pytest.mark.parametrize("drop", [("request", "stored_references"), ("request", "metadata_keys"),
                                  ("model",), ("dev",), ("dev", "allow_plaintext")])
def test_from_dict_requires_every_field(base_input: dict[str, Any], drop: tuple[str, ...]) -> None:
    """A missing field is an error, never a permissive default (the Rego rules deny a raw
    document missing it, so a default would turn that denial into an allow)."""
    doc = copy.deepcopy(base_input)
    inner = doc
    for key in drop[:-1]:
        inner = inner[key]
    del inner[drop[-1]]
    with pytest.raises(PolicyInputError):
        PolicyInput.from_dict(doc)


@pytest.mark.parametrize("override", [{"tenant_name": "acme\x00"}, {"path": "/v1/chat\x00/x"},
                                      {"model": "m\x00"}, {"region": "eu\x00-west-1"}])
def test_input_strings_never_hold_nul(override: dict[str, object]) -> None:
    with pytest.raises(PolicyInputError):
        _input(**override)


@pytest.mark.parametrize("keys", [("\x00distill_run",), ("x\x00eval",), ("a\nb",), ("k" * 65,),
                                  tuple(f"k{i}" for i in range(17))])
def test_metadata_keys_within_the_api_limits(keys: tuple[str, ...]) -> None:
    body = {"metadata": dict.fromkeys(keys, "v")}
    with pytest.raises(PolicyInputError):
        RequestParams.from_body(body)
    # Built directly, keys are folded ones (``fold_key``), which NFKD may make up to 18 times
    # longer than a request's key.
    direct = tuple("k" * 1153 if len(k) == 65 else k for k in keys)
    with pytest.raises(PolicyInputError):
        RequestParams(metadata_keys=direct)
    assert RequestParams(metadata_keys=("k" * 1152,)).metadata_keys == ("k" * 1152,)
    # Bodies of endpoints that are never forwarded: such a map counts as absent.
    assert RequestParams.from_body(body, lenient=True).metadata_keys == ()
    fine = {f"k{i}": "v" for i in range(16)}
    assert RequestParams.from_body({"metadata": fine}).metadata_keys == tuple(sorted(fine))


def test_engine_input_refuses_nul_at_the_c_boundary() -> None:
    from policy._regopy_capi import _c_string

    assert _c_string("distill") == b"distill"
    with pytest.raises(ValueError, match="NUL"):
        _c_string("\x00distill")
