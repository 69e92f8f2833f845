"""The enforcement point in a real server: every forwarded request carries a decision and a
record; denials are 403 ``policy_denied`` with rule ids; a failing engine fails closed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import gateway_config, predicate, request_records
from tests.policy.opa_servers import FakeOPAServer, FaultInjectingOPAServer
from tests.server import Gateway, Proc, start_gateway


def _post(gw: Gateway, key: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=30)


def _record(gw: Gateway, key: str, header: str) -> dict[str, object]:
    record_id = header.split(";")[0].removeprefix("id=")
    return predicate(httpx.get(f"{gw.url}/v1/audit/records/{record_id}",
                               headers={"Authorization": f"Bearer {key}"}).content)


def test_every_forwarded_request_has_a_decision_record(gateway: Gateway, api_key: str) -> None:
    digest = httpx.get(f"{gateway.url}/.well-known/sealgate/identity").json()["policy_digest"]
    for path, body in (("/v1/chat/completions", {"model": "fast-echo",
                                                 "messages": [{"role": "user", "content": "a"}]}),
                       ("/v1/completions", {"model": "fast-echo", "prompt": "b"}),
                       ("/v1/embeddings", {"model": "fast-echo", "input": "c"})):
        response = _post(gateway, api_key, path, body)
        assert response.status_code == 200
        record = _record(gateway, api_key, response.headers["sealgate-receipt"])
        assert record["kind"] == "intent" and record["decision"] == "allow"
        assert record["policy_bundle_digest"] == digest
        assert record["channel"] == "plaintext"  # development flag on: the record says so
        assert record["endpoint"] == path


@pytest.mark.parametrize(("path", "body", "rule"), [
    ("/v1/chat/completions", {"model": "fast-echo", "store": True,
                              "messages": [{"role": "user", "content": "x"}]}, "SG-STORE-001"),
    ("/v1/fine_tuning/jobs", {"model": "fast-echo", "training_file": "file-1"}, "SG-TRAIN-001"),
    ("/v1/batches", {"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}, "SG-TRAIN-003"),
    ("/v1/chat/completions", {"model": "fast-echo", "max_tokens": 100000,
                              "messages": [{"role": "user", "content": "x"}]}, "SG-TOKENS-001"),
])
def test_denials_name_rules_and_never_echo(gateway: Gateway, api_key: str, path: str,
                                           body: dict[str, object], rule: str) -> None:
    response = _post(gateway, api_key, path, body)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "policy_denied" and rule in error["message"]
    assert "file-1" not in response.text


@pytest.mark.parametrize(("path", "body", "endpoint"), [
    ("/v1/fine_tuning/jobs", {"n": 1.5}, "/v1/fine_tuning/jobs"),
    ("/v1/fine_tuning/jobs", {"max_tokens": 10**30, "n": True}, "/v1/fine_tuning/jobs"),
    ("/v1/fine_tuning/jobs%20x", {}, ":invalid-path"),
    ("/v1/fine_tuning/jobs/" + "a" * 120, {}, ":invalid-path"),
    ("/v1/fine_tuning/%C3%A9%22CANARY", {}, ":invalid-path"),
    ("/v1/fine_tuning/jobs%00CANARY", {}, ":invalid-path"),  # a NUL fits no policy input
])
def test_every_denial_has_a_record(gateway: Gateway, api_key: str, path: str,
                                   body: dict[str, object], endpoint: str) -> None:
    """Paths outside the record grammar get a fixed label; bodies of refused endpoints with
    malformed optional fields still get a decision (lenient policy input)."""
    response = _post(gateway, api_key, path, body)
    assert response.status_code == 403 and "SG-TRAIN-001" in response.json()["error"]["message"]
    denial = request_records(gateway, api_key, response.headers["x-request-id"], "denial")["denial"]
    assert denial["endpoint"] == endpoint and denial["rule_ids"] == ["SG-TRAIN-001"]
    assert "CANARY" not in json.dumps(denial) and "Traceback" not in gateway.output()


def _file_part(**file: str) -> dict[str, object]:
    return {"model": "fast-echo", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "summarise CANARY-stored"}, {"type": "file", "file": file}]}]}


def test_stored_file_reference_is_denied_and_recorded(gateway: Gateway, api_key: str) -> None:
    response = _post(gateway, api_key, "/v1/chat/completions", _file_part(file_id="file-CANARY"))
    assert response.status_code == 403 and "SG-STORE-006" in response.json()["error"]["message"]
    assert "CANARY" not in response.text
    denial = request_records(gateway, api_key, response.headers["x-request-id"], "denial")["denial"]
    assert denial["rule_ids"] == ["SG-STORE-006"] and denial["decision"] == "deny"
    inline = _post(gateway, api_key, "/v1/chat/completions",
                   _file_part(file_data="data:application/pdf;base64,JVBE", filename="a.pdf"))
    assert inline.status_code == 200


def _engine_gateway(workdir: Path, fast: Proc, engine_url: str) -> Gateway:
    config = gateway_config(fast.port, allow_plaintext=True, local=False)
    config = (f'policy_engine = "opa"\nopa_url = "{engine_url}"\npolicy_timeout_ms = 300\n'
              + config)
    return start_gateway(workdir, config)


def test_opa_engine_path(workdir: Path, fast_upstream: Proc) -> None:
    with FakeOPAServer() as opa:
        gw = _engine_gateway(workdir, fast_upstream, opa.url)
        try:
            key = gw.new_key("acme")
            ok = _post(gw, key, "/v1/chat/completions",
                       {"model": "fast-echo", "messages": [{"role": "user", "content": "x"}]})
            assert ok.status_code == 200
            denied = _post(gw, key, "/v1/fine_tuning/jobs", {"model": "fast-echo"})
            assert denied.status_code == 403
        finally:
            gw.stop()


@pytest.mark.parametrize("fault", ["hang", "500", "garbage"])
def test_failing_engine_fails_closed_within_timeout(workdir: Path, fast_upstream: Proc,
                                                    fault: str) -> None:
    with FaultInjectingOPAServer(fault, hang_s=5.0) as opa:  # type: ignore[arg-type]
        gw = _engine_gateway(workdir, fast_upstream, opa.url)
        try:
            key = gw.new_key("acme")
            before = httpx.get(f"{fast_upstream.url}/stats").json()
            started = time.monotonic()
            response = _post(gw, key, "/v1/chat/completions",
                             {"model": "fast-echo", "stream": True,
                              "messages": [{"role": "user", "content": "x"}]})
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "policy_unavailable"
            assert elapsed < 2.0
            after = httpx.get(f"{fast_upstream.url}/stats").json()
            assert after["streams_started"] == before["streams_started"]  # nothing forwarded
        finally:
            gw.stop()


def test_model_listing_is_decided_and_a_denial_recorded(gateway: Gateway, api_key: str) -> None:
    """GET /v1/models and /v1/models/{id} reach the policy like every other endpoint: a
    tenant whose contract excludes this deployment's region gets no answer from either."""
    assert httpx.get(f"{gateway.url}/v1/models",
                     headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    outside = gateway.new_key("acme-health")  # contract: EU regions only; this one is "local"
    for path in ("/v1/models", "/v1/models/fast-echo"):
        response = httpx.get(f"{gateway.url}{path}", headers={"Authorization": f"Bearer {outside}"})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "policy_denied"
        assert "SG-REGION-001" in response.json()["error"]["message"]
        denial = request_records(gateway, outside, response.headers["x-request-id"],
                                 "denial")["denial"]
        assert denial["rule_ids"] == ["SG-REGION-001"] and denial["endpoint"] == path


@pytest.mark.parametrize("form", ["multipart", "urlencoded"])
def test_form_uploads_for_fine_tuning_cite_their_rule(gateway: Gateway, api_key: str,
                                                      form: str) -> None:
    """File uploads are forms, not JSON: their ``purpose`` still reaches the policy, and the
    file itself is never read or kept."""
    auth = {"Authorization": f"Bearer {api_key}"}
    if form == "multipart":
        response = httpx.post(f"{gateway.url}/v1/files", headers=auth, data={"purpose": "fine-tune"},
                              files={"file": ("train.jsonl", b'{"prompt": "CANARY-upload"}\n')})
    else:
        response = httpx.post(f"{gateway.url}/v1/uploads", headers=auth,
                              data={"purpose": "fine-tune", "filename": "CANARY.jsonl"})
    assert response.status_code == 403 and "SG-TRAIN-002" in response.json()["error"]["message"]
    denial = request_records(gateway, api_key, response.headers["x-request-id"], "denial")["denial"]
    assert denial["rule_ids"] == ["SG-TRAIN-002"] and "CANARY" not in json.dumps(denial)
    other = httpx.post(f"{gateway.url}/v1/files", headers=auth, data={"purpose": "assistants"},
                       files={"file": ("a.txt", b"CANARY")})
    assert other.status_code == 403 and "SG-STORE-005" in other.json()["error"]["message"]
    # A NUL in the purpose fits no policy input: it is decided (and recorded) all the same.
    nul = httpx.post(f"{gateway.url}/v1/files", headers=auth, data={"purpose": "fine-tune\x00"},
                     files={"file": ("a.txt", b"CANARY")})
    assert nul.status_code == 403 and nul.json()["error"]["code"] == "policy_denied"
    assert request_records(gateway, api_key, nul.headers["x-request-id"], "denial")["denial"]


def test_a_query_purpose_cannot_relabel_a_fine_tuning_upload(gateway: Gateway, api_key: str) -> None:
    """The OpenAI API reads ``purpose`` from the body: a query's counts only without one."""
    auth = {"Authorization": f"Bearer {api_key}"}
    relabelled = httpx.post(f"{gateway.url}/v1/files?purpose=assistants", headers=auth,
                            data={"purpose": "fine-tune"}, files={"file": ("a.jsonl", b"{}")})
    assert relabelled.status_code == 403 and "SG-TRAIN-002" in relabelled.json()["error"]["message"]
    bodyless = httpx.post(f"{gateway.url}/v1/uploads?purpose=fine-tune", headers=auth, json={})
    assert bodyless.status_code == 403 and "SG-TRAIN-002" in bodyless.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path", "rule"), [
    ("GET", "/v1/models%3F/chat/completions", "SG-ENDPOINT-001"),
    ("POST", "/v1/chat/completions%23x", "SG-ENDPOINT-001"),
])
def test_an_encoded_query_mark_is_part_of_the_path_the_policy_decides(
        gateway: Gateway, api_key: str, method: str, path: str, rule: str) -> None:
    """A ``%3F`` or ``%23`` decodes into the path, not into a query: the policy decides on the
    whole path (cut there, these were decided as GET /v1/models and POST /v1/chat/completions,
    allowed, and answered 404 with no record)."""
    response = httpx.request(method, f"{gateway.url}{path}", json={"model": "fast-echo"},
                             headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 403 and rule in response.json()["error"]["message"], response.text
    denial = request_records(gateway, api_key, response.headers["x-request-id"], "denial")["denial"]
    assert denial["rule_ids"] == [rule]


@pytest.mark.parametrize(("method", "path", "rule"), [
    ("GET", "/v1/chat/completions", "SG-TRAIN-005"),  # listing stored completions
    ("DELETE", "/v1/chat/completions", "SG-ENDPOINT-001"),
    ("GET", "/v1/embeddings", "SG-ENDPOINT-001"),
    ("PUT", "/v1/completions", "SG-ENDPOINT-001"),
    ("POST", "/v1/models", "SG-ENDPOINT-001"),
    ("DELETE", "/v1/models/fast-echo", "SG-ENDPOINT-001"),
])
def test_other_methods_on_served_paths_are_decided_and_recorded(
        gateway: Gateway, api_key: str, method: str, path: str, rule: str) -> None:
    """Not a 405 from the router, which would skip the channel, the key, the decision and the
    record: the policy names these requests (SG-TRAIN-005)."""
    response = httpx.request(method, f"{gateway.url}{path}", timeout=30,
                             headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 403, response.text
    assert rule in response.json()["error"]["message"]
    denial = request_records(gateway, api_key, response.headers["x-request-id"], "denial")["denial"]
    # The client's model name is not named in the record (a served model's GET is).
    assert denial["rule_ids"] == [rule] and denial["endpoint"] == path.replace("fast-echo", ":id")
    assert httpx.get(f"{gateway.url}{path}").status_code in (401, 403)  # no key: refused


@pytest.mark.parametrize(("metadata", "param"), [
    ({"\u0000distill_run": "x"}, "metadata"),  # a C engine would have read the key as ""
    ({"x\u0000eval": "x"}, "metadata"),
    ({f"k{i}": "v" for i in range(17)}, "metadata"),  # one engine evaluation per key and term
    ({"k" * 65: "v"}, "metadata"),
    ({"train_set\n": "x"}, "metadata"),  # "$" would match before the newline
])
def test_metadata_beyond_the_api_limits_is_refused(gateway: Gateway, api_key: str,
                                                   metadata: dict[str, str], param: str) -> None:
    response = _post(gateway, api_key, "/v1/chat/completions", {
        "model": "fast-echo", "messages": [{"role": "user", "content": "x"}], "metadata": metadata})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert "distill" not in response.text and "eval" not in response.text
