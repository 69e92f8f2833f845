"""The identity routes inside a small Litestar app wired like the real one (Provide DI)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from proxy.attestation import (
    Evidence,
    EvidenceProvider,
    IdentityService,
    SimulatedProvider,
    VerificationError,
    VerificationPolicy,
    identity_handlers,
    verify_identity,
)
from proxy.attestation._identity import TokenBucket
from proxy.attestation._routes import _client_key

M = "c3" * 48
PATH = "/.well-known/sealgate/identity"
POLICY = VerificationPolicy(allowed_measurements=frozenset({M}), allow_simulated=True)


class FaultInjectingProvider(EvidenceProvider):
    """Always fails, as a provider does when the hardware interface is gone."""

    platform, name = "sev-snp", "fault"

    async def evidence(self, report_data: bytes) -> Evidence:
        raise VerificationError("evidence_unavailable", "injected")


def _app(provider: EvidenceProvider, burst: int = 3) -> Litestar:
    service = IdentityService(provider, lambda: b"\x01keys", bytes(32), lambda: "sha256:00",
                              M, nonce_rate=0.001, nonce_burst=burst)
    return Litestar(route_handlers=identity_handlers,
                    dependencies={"identity_service": Provide(lambda: service, sync_to_thread=False)})


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(_app(SimulatedProvider(M))) as c:
        yield c


def _nonce(raw: bytes) -> dict[str, str]:
    return {"nonce": base64.b64encode(raw).decode()}


def test_get_document_verifies(client: TestClient[Litestar]) -> None:
    response = client.get(PATH)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    identity = verify_identity(response.json(), POLICY)
    assert identity.key_configs == b"\x01keys"


def test_post_with_nonce_verifies(client: TestClient[Litestar]) -> None:
    nonce = b"z" * 24
    response = client.post(PATH, json=_nonce(nonce))
    assert response.status_code == 200
    assert verify_identity(response.json(), POLICY, nonce=nonce).measurement == M


@pytest.mark.parametrize("body", [_nonce(b"short"), _nonce(b"x" * 65), {"nonce": "%%%"}, {}, [],
                                  {"nonce": "\u00e9" * 24}, b'{"nonce": "caf\xe9"}',
                                  b"[" * 100_000 + b"]" * 100_000],
                         ids=["short", "long", "not_base64", "missing", "not_object",
                              "non_ascii", "not_utf8", "nested_too_deeply"])
def test_bad_nonce(client: TestClient[Litestar], body: object) -> None:
    response = (client.post(PATH, content=body, headers={"content-type": "application/json"})
                if isinstance(body, bytes) else client.post(PATH, json=body))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_nonce" and error["param"] == "nonce"
    assert set(error) == {"message", "type", "param", "code"}


def test_rate_limited(client: TestClient[Litestar]) -> None:
    statuses = [client.post(PATH, json=_nonce(b"r" * 16)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    error = client.post(PATH, json=_nonce(b"r" * 16)).json()["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert client.get(PATH).status_code == 200  # the cached document is not limited


def test_one_ipv6_host_has_one_budget_and_no_debt_is_forgiven() -> None:
    """A /64 is one host's: its addresses share a budget. Past the table's size, only buckets
    that have refilled are dropped; while every one still owes, a newcomer waits too."""
    now = [0.0]
    limiter = TokenBucket(rate=1.0, burst=2, max_keys=3, clock=lambda: now[0])
    hosts = [_client_key(f"2001:db8::{i:x}") for i in range(1, 4)]
    assert len(set(hosts)) == 1 and _client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert _client_key("192.0.2.7") == "192.0.2.7" and _client_key("unknown") == "unknown"
    assert [limiter.allow(h) for h in hosts] == [True, True, False]
    for key in ("a", "b"):
        assert limiter.allow(key) and limiter.allow(key)  # three keys, all in debt now
    assert limiter.allow("c") is False and limiter.allow(hosts[0]) is False
    now[0] += 10  # every bucket refilled: they go, and room is made
    assert limiter.allow("c") is True


def test_provider_failure_is_503() -> None:
    with TestClient(_app(FaultInjectingProvider())) as c:
        response = c.get(PATH)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "evidence_unavailable"
