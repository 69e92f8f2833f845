"""Limits on each tenant's requests, through a real gateway: in flight at once
(``tenant_max_concurrent``), started per minute (``tenant_requests_per_minute``) and tokens used
per minute (``tenant_tokens_per_minute``). Past any, a request is refused at once (429,
``Retry-After``, nothing forwarded or recorded), other tenants are not held up, and every way a
request ends gives its place back."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy import load_bundle
from tests.integration.conftest import gateway_config, request_records
from tests.server import Gateway, Proc, start_gateway

pytestmark = pytest.mark.timeout(120)

CAP = 2
PER_MINUTE = 60
TOKENS_PER_MINUTE = 6000  # 100 a second
CHAT = "/v1/chat/completions"
# The fast upstream takes temperature / 100 seconds per token: this one answers in ~3 s.
SLOW = {"model": "fast-echo", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 150, "temperature": 2}
QUICK = {"model": "fast-echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Held ~6 s by the fast upstream: a window far wider than refusing a request takes.
HELD = {**SLOW, "max_tokens": 300}


@pytest.fixture(scope="module")
def limited(workdir: Path, fast_upstream: Proc) -> Iterator[Gateway]:
    config = (f"tenant_max_concurrent = {CAP}\ntenant_requests_per_minute = {PER_MINUTE}\n"
              f"tenant_tokens_per_minute = {TOKENS_PER_MINUTE}\n" + gateway_config(
        fast_upstream.port, allow_plaintext=True, local=False)
              + f'\n[backends.impatient]\ntype = "openai"\n'
                f'url = "http://127.0.0.1:{fast_upstream.port}/v1"\ntimeout_s = 1.0\n'
                '\n[models."slow-echo"]\nbackend = "impatient"\nretention_tier = "attested-zero"\n')
    gw = start_gateway(workdir, config)
    yield gw
    gw.stop()


def _post(gw: Gateway, key: str, body: dict[str, Any], path: str = CHAT) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"})


def _stats(upstream: Proc) -> dict[str, int]:
    return dict(httpx.get(f"{upstream.url}/stats", timeout=30).json())


def test_past_the_cap_a_request_is_refused_at_once(limited: Gateway, fast_upstream: Proc) -> None:
    key, other = limited.new_key("busy"), limited.new_key("patient")
    before = _stats(fast_upstream)
    with ThreadPoolExecutor(CAP) as pool:
        slow = [pool.submit(_post, limited, key, HELD) for _ in range(CAP)]
        deadline = time.monotonic() + 60  # both admitted and forwarded: generating upstream
        while _stats(fast_upstream)["whole_started"] < before["whole_started"] + CAP:
            assert time.monotonic() < deadline, "the held requests never reached the upstream"
            assert not any(f.done() for f in slow), [f.result().text for f in slow if f.done()]
            time.sleep(0.02)
        refused = _post(limited, key, QUICK)
        # At once: while both places were still taken, not once one was given back.
        assert _stats(fast_upstream)["whole_finished"] == before["whole_finished"]
        assert not any(f.done() for f in slow)
        served = _post(limited, other, QUICK)
        assert [f.result().status_code for f in slow] == [200] * CAP
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "concurrency_limit_exceeded" and error["type"] == "rate_limit_error"
    assert served.status_code == 200  # another tenant is not held up
    # Refused before the policy: no decision, no record, nothing forwarded.
    rid = refused.headers["x-request-id"]
    assert request_records(limited, key, rid, final="intent", timeout=1.0) == {}
    assert _post(limited, key, QUICK).status_code == 200  # its places are back


def _leave_a_stream(gw: Gateway, key: str) -> None:
    body = {**SLOW, "stream": True}
    with httpx.stream("POST", f"{gw.url}{CHAT}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        next(response.iter_bytes())  # the first chunk, then the client leaves


def test_every_way_a_request_ends_gives_its_place_back(limited: Gateway) -> None:
    key = limited.new_key("ends")
    for _ in range(CAP):
        _leave_a_stream(limited, key)
        assert _post(limited, key, {**QUICK, "model": "no-such-model"}).status_code == 404
        assert _post(limited, key, {**QUICK, "store": True}).status_code == 403  # policy
        assert _post(limited, key, {**QUICK, "messages": "x"}).status_code == 400
        assert _post(limited, key, {**QUICK, "model": "down-model"}).status_code in (502, 503)
        assert _post(limited, key, {**QUICK, "stream": True}).status_code == 200
        assert _post(limited, key, {"model": "fast-echo", "input": "x"},
                     "/v1/embeddings").status_code == 200
    # A stream the client left is closed by the gateway a moment later: wait for its places.
    deadline = time.monotonic() + 15
    while True:
        with ThreadPoolExecutor(CAP) as pool:
            answers = list(pool.map(lambda _: _post(limited, key, {**SLOW, "max_tokens": 25}),
                                    range(CAP)))
        if all(a.status_code == 200 for a in answers) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [a.status_code for a in answers] == [200] * CAP, [a.text for a in answers]


def test_past_its_requests_per_minute_a_tenant_waits(limited: Gateway) -> None:
    key, other = limited.new_key("hasty"), limited.new_key("calm")
    served = 0
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        # The burst, and what refills while it is sent (each request takes well under the
        # second that refills one).
        for _ in range(2 * PER_MINUTE):
            refused = client.post(f"{limited.url}{CHAT}", json=QUICK)
            if refused.status_code != 200:
                break
            served += 1
    assert PER_MINUTE <= served < 2 * PER_MINUTE
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    # One more every second: the wait is what is left of the one being refilled.
    assert 1 <= int(refused.headers["retry-after"]) <= 60 // PER_MINUTE
    # Refused endpoints too (each would cost a decision and a signed denial record), asked at
    # once, before the next request refills.
    also = [httpx.request(method, f"{limited.url}{path}", json={"model": "fast-echo"},
                          headers={"Authorization": f"Bearer {key}"}, timeout=60)
            for path, method in (("/v1/fine_tuning/jobs", "POST"), ("/v1/models", "GET"))]
    assert [r.status_code for r in also] == [429, 429], [r.text for r in also]
    for response, final in ((refused, "intent"), *((r, "denial") for r in also)):
        assert request_records(limited, key, response.headers["x-request-id"], final=final,
                               timeout=1.0) == {}
    assert _post(limited, other, QUICK).status_code == 200
    time.sleep(int(refused.headers["retry-after"]) + 0.2)
    assert _post(limited, key, QUICK).status_code == 200


def test_past_its_tokens_per_minute_a_tenant_waits(limited: Gateway) -> None:
    """Tokens are counted as each request ends, from the backend's usage (the fast upstream
    uses 5 prompt tokens and max_tokens completion tokens), streamed answers included."""
    key, other = limited.new_key("wordy"), limited.new_key("terse")
    big = {**QUICK, "max_tokens": 4000}
    assert _post(limited, key, big).status_code == 200  # 4005 of its 6000
    with httpx.stream("POST", f"{limited.url}{CHAT}", json={**big, "stream": True}, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as streamed:
        assert streamed.status_code == 200  # some of the budget was left: admitted
        assert streamed.read().endswith(b"data: [DONE]\n\n")
    refused = _post(limited, key, QUICK)  # about 2000 tokens in debt
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "token_rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 21  # the debt (at most 2010), at 100/s
    assert request_records(limited, key, refused.headers["x-request-id"], final="intent",
                           timeout=1.0) == {}
    assert _post(limited, other, big).status_code == 200  # another tenant's own budget


def test_leaving_before_the_answer_does_not_escape_the_token_budget(limited: Gateway) -> None:
    """The backend reports no tokens for an answer its client left: the budget is charged the
    prompt's estimate and the output limit asked for, or leaving early would get around it."""
    key = limited.new_key("leaver")
    slow = {**QUICK, "max_tokens": 4000, "temperature": 2}  # 80 s to answer in full
    for _ in range(2):  # 2 x (4000 + the prompt) of its 6000
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{limited.url}{CHAT}", json=slow, timeout=0.5,
                       headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + 15  # until the gateway has seen both clients leave
    while (refused := _post(limited, key, QUICK)).status_code == 200:
        assert time.monotonic() < deadline, "the abandoned answers were not charged"
        time.sleep(0.2)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "token_rate_limit_exceeded"


@pytest.mark.parametrize("case", ["left", "timed out"])
def test_an_answer_without_a_limit_or_a_count_is_charged_the_contracts_limit(
        limited: Gateway, case: str) -> None:
    """A whole answer that set no ``max_tokens`` may generate up to what the contract allows
    (``default``: 4096). If the backend never counts it (the client left, or the backend ran
    past its timeout), that is what is charged: 2 x (4096 + the prompt) of 6000."""
    key = limited.new_key("unbounded-" + case.replace(" ", "-"))
    # the upstream holds the answer 2 s; the client waits 0.5 s, slow-echo's backend 1 s
    unbounded = {**QUICK, "presence_penalty": 2.0}
    unbounded.pop("max_tokens")
    for _ in range(2):
        if case == "left":
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{limited.url}{CHAT}", json=unbounded, timeout=0.5,
                           headers={"Authorization": f"Bearer {key}"})
        else:
            timed_out = _post(limited, key, {**unbounded, "model": "slow-echo"})
            assert timed_out.status_code == 503, timed_out.text
    deadline = time.monotonic() + 15  # until the gateway has seen both end
    while (refused := _post(limited, key, QUICK)).status_code == 200:
        assert time.monotonic() < deadline, "the unbounded answers were not charged"
        time.sleep(0.2)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "token_rate_limit_exceeded"


def _contract(name: str, limits: str) -> str:
    """A contract like ``default`` (policy/data/contracts.yaml) with ``limits`` added."""
    return (f"  {name}:\n    models: [\"*\"]\n    regions: [\"local\"]\n    max_tokens: 4096\n"
            "    max_n: 1\n    allow_streaming: true\n    allow_contractual_zero: false\n"
            f"    rewrite_store: false\n{limits}")


def _bundle_with(bundle_dir: Path, contracts: str) -> tuple[Path, str]:
    """A copy of the shipped bundle at ``bundle_dir`` with ``contracts`` added to its
    contracts file; and that file's shipped text."""
    shutil.copytree(load_bundle().root, bundle_dir,
                    ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    path = bundle_dir / "data" / "contracts.yaml"
    shipped = path.read_text()
    path.write_text(shipped + contracts)
    return bundle_dir, shipped


def test_the_model_list_shows_what_a_tenants_contract_allows(workdir: Path,
                                                             fast_upstream: Proc) -> None:
    """``GET /v1/models`` lists the models the tenant's contract lets it use, and retrieving
    another answers as for a model not served (404 ``model_not_found``); a contract with
    ``*`` sees every model."""
    bundle_dir, _ = _bundle_with(workdir / "bundle-models", _contract("picky", "").replace(
        'models: ["*"]', 'models: ["fast-echo", "not-served"]'))
    config = (f'policy_bundle = "{bundle_dir}"\n'
              + gateway_config(fast_upstream.port, allow_plaintext=True, local=False))
    gw = start_gateway(workdir, config)
    try:
        picky, free = gw.new_key("picky"), gw.new_key("free")

        def listed(key: str) -> list[str]:
            answer = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200
            return [m["id"] for m in answer.json()["data"]]

        assert listed(picky) == ["fast-echo"]
        assert {"fast-echo", "acme/fast-echo", "down-model"} <= set(listed(free))
        for model, status in (("fast-echo", 200), ("acme/fast-echo", 404)):
            answer = httpx.get(f"{gw.url}/v1/models/{model}",
                               headers={"Authorization": f"Bearer {picky}"})
            assert answer.status_code == status
        unknown = httpx.get(f"{gw.url}/v1/models/nowhere", headers={"Authorization": f"Bearer {picky}"})
        assert answer.json() == unknown.json()  # the same answer as for a model not served
    finally:
        gw.stop()


def test_a_tenants_contract_sets_its_own_limits(workdir: Path, fast_upstream: Proc) -> None:
    """A contract's ``max_concurrent_requests`` replaces the gateway's setting for that tenant
    (here: none); a reloaded bundle's limits apply from the reload on."""
    bundle_dir, shipped = _bundle_with(
        workdir / "bundle-limits", _contract("solo", "    max_concurrent_requests: 1\n")
        + _contract("frugal", "    tokens_per_minute: 100\n"))
    contracts = bundle_dir / "data" / "contracts.yaml"
    config = (f'policy_bundle = "{bundle_dir}"\npolicy_reload_s = 1\n'
              + gateway_config(fast_upstream.port, allow_plaintext=True, local=False))
    gw = start_gateway(workdir, config)
    try:
        solo, free = gw.new_key("solo"), gw.new_key("free")

        def two_at_once(key: str) -> list[int]:
            with ThreadPoolExecutor(2) as pool:
                slow = pool.submit(_post, gw, key, SLOW)
                time.sleep(1.0)
                second = _post(gw, key, QUICK).status_code
                return [slow.result().status_code, second]

        assert two_at_once(solo) == [200, 429]
        assert two_at_once(free) == [200, 200]  # no contract of its own: the setting (none)
        frugal = gw.new_key("frugal")
        assert _post(gw, frugal, {**QUICK, "max_tokens": 150}).status_code == 200  # 155 of 100
        spent = _post(gw, frugal, QUICK)
        assert spent.status_code == 429 and spent.json()["error"]["code"] == "token_rate_limit_exceeded"
        for _ in range(2):  # no token budget of its own: the setting (none)
            assert _post(gw, free, {**QUICK, "max_tokens": 150}).status_code == 200
        contracts.write_text(shipped + _contract("solo", "    max_concurrent_requests: 2\n"))
        digest = load_bundle(bundle_dir).digest
        deadline = time.monotonic() + 30
        while httpx.get(f"{gw.url}/.well-known/sealgate/identity").json()["policy_digest"] != digest:
            assert time.monotonic() < deadline, "the new bundle was not loaded"
            time.sleep(0.2)
        assert two_at_once(solo) == [200, 200]
    finally:
        gw.stop()
