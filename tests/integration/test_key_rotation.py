"""OHTTP key rotation in a running server: the identity document follows the new key at once,
the previous key keeps working for its grace period, and each identity is kept as evidence."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import httpx2

from proxy.attestation import VerificationPolicy, verify_identity
from proxy.client import SealedTransport, StaticKeySource
from tests.server import Proc, fast_config, start_gateway


def _sealed_chat(url: str, key: str, configs: bytes) -> int:
    transport = SealedTransport(gateway_url=f"{url}/.well-known/ohttp-gateway",
                                key_source=StaticKeySource(configs))
    with httpx2.Client(transport=transport, timeout=10) as client:
        response = client.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "fast", "messages": [{"role": "user", "content": "x"}]})
    return response.status_code


def test_rotation(workdir: Path, fast_upstream: Proc) -> None:
    gw = start_gateway(workdir, fast_config(fast_upstream.port, ohttp_key_rotation_s=1))
    try:
        key = gw.new_key("acme")
        first = httpx.get(f"{gw.url}/.well-known/ohttp-gateway").content
        deadline = time.monotonic() + 10
        while (current := httpx.get(f"{gw.url}/.well-known/ohttp-gateway").content) == first:
            assert time.monotonic() < deadline, "the key did not rotate"
            time.sleep(0.2)
        document = httpx.get(f"{gw.url}/.well-known/sealgate/identity").json()
        verified = verify_identity(document, VerificationPolicy(allow_simulated=True))
        assert verified.key_configs == current
        assert _sealed_chat(gw.url, key, current) == 200
        assert _sealed_chat(gw.url, key, first) == 200  # still inside the grace period
        assert len(list((gw.data_dir / "identity").glob("*.json"))) >= 2
    finally:
        gw.stop()
