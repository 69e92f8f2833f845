"""OPAEngine against loopback Data API servers: same decisions as regopy, fail closed on faults."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from policy import OPAEngine, PolicyBundle, PolicyError, PolicyUnavailable, RegopyEngine

from .conftest import load_cases, patched
from .opa_servers import FaultInjectingOPAServer, OPADataAPITestServer

BASE, CASES = load_cases()
SAMPLE = [c for c in CASES if not c.get("input_error")][::4]


async def _decide_all(engine: OPAEngine, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return [(await engine.decide(doc)).to_dict() for doc in docs]
    finally:
        await engine.aclose()


def test_opa_engine_matches_regopy(bundle: PolicyBundle, engine: RegopyEngine) -> None:
    docs = [patched(BASE, c["patch"]) for c in SAMPLE]
    with OPADataAPITestServer(bundle) as server:
        opa = OPAEngine(server.url, bundle, timeout_s=2.0)
        got = asyncio.run(_decide_all(opa, docs))
        assert len(server.requests) == len(docs)
        assert server.requests[0] == {"input": docs[0]}
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
        assert time.monotonic() - start < 1.0


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
