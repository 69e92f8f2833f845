"""Canary: client text in the request path never reaches records, tables, logs or metrics."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import request_records
from tests.integration.test_canary import files_containing
from tests.server import Gateway


@pytest.mark.parametrize(("template", "endpoint", "rule"), [
    ("/v1/fine_tuning/jobs/{}/cancel", "/v1/fine_tuning/jobs/:id/cancel", "SG-TRAIN-001"),
    ("/v1/files/{}", "/v1/files/:id", "SG-STORE-005"),
    ("/v1/{}", "/v1/:id", "SG-ENDPOINT-001"),
    ("/v1/chat/completions/{}", "/v1/chat/completions/:id", "SG-TRAIN-005"),
])
def test_canary_in_path_is_not_recorded(gateway: Gateway, api_key: str, workdir: Path,
                                        template: str, endpoint: str, rule: str) -> None:
    """A path segment that is not a word of the API is recorded as ``:id``: a client can write
    anything there, and an identifier-shaped canary fits the record grammar."""
    canary = "CANARY" + secrets.token_hex(16)
    response = httpx.post(f"{gateway.url}{template.format(canary)}", json={},
                          headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 403 and rule in response.json()["error"]["message"]
    assert canary not in response.text
    denial = request_records(gateway, api_key, response.headers["x-request-id"], "denial")["denial"]
    assert denial["endpoint"] == endpoint and canary not in json.dumps(denial)
    assert files_containing(workdir, canary.encode()) == []
    assert canary not in gateway.output()
    assert canary not in httpx.get(f"{gateway.url}/metrics").text


def test_configured_model_path_keeps_its_name(gateway: Gateway, api_key: str) -> None:
    """``GET /v1/models/{model}`` of a configured model is recorded with the model's name: the
    operator's text, not the client's."""
    outside = gateway.new_key("acme-health")  # contract: EU regions only; this one is "local"
    response = httpx.get(f"{gateway.url}/v1/models/acme/fast-echo",
                         headers={"Authorization": f"Bearer {outside}"})
    assert response.status_code == 403
    denial = request_records(gateway, outside, response.headers["x-request-id"], "denial")["denial"]
    assert denial["endpoint"] == "/v1/models/acme/fast-echo"
