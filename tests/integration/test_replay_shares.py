"""Replay protection cannot be filled by those who hold no API key (or by one tenant) to lock
everyone else out: a real gateway on loopback with a small replay set."""

from __future__ import annotations

import base64
import json
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import httpx2

from audit import Receipt
from proxy.client import SealedTransport, StaticKeySource, verify_response_receipt
from proxy.ohttp import BHTTPRequest, decode_key_configs, decode_response, encapsulate_request, encode_request
from tests.server import Gateway, Proc, fast_config, start_gateway

CHAT = {"model": "fast", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}


def _checkpoint_size(gw: Gateway) -> int:
    """The tree size of the latest published checkpoint (the signed note's second line)."""
    return int(httpx.get(f"{gw.url}/v1/audit/checkpoint", timeout=30).text.split("\n")[1])


def _code(response: httpx2.Response) -> str | None:
    return response.json()["error"]["code"] if response.status_code >= 400 else None


def test_shares_of_the_replay_set(workdir: Path, fast_upstream: Proc) -> None:
    # 64 entries: requests without a valid key hold 4 together, each tenant 16.
    gw = start_gateway(workdir, fast_config(fast_upstream.port, replay_max_entries=64))
    try:
        alpha, beta = gw.new_key("alpha"), gw.new_key("beta")
        configs = httpx.get(f"{gw.url}/.well-known/ohttp-gateway").content
        transport = SealedTransport(gateway_url=f"{gw.url}/.well-known/ohttp-gateway",
                                    key_source=StaticKeySource(configs))
        with httpx2.Client(transport=transport, timeout=10) as sealed:
            def chat(key: str) -> httpx2.Response:
                return sealed.post(f"{gw.url}/v1/chat/completions", json=CHAT,
                                   headers={"Authorization": f"Bearer {key}"})

            # Without a key, or with one that is not valid: four, then refused.
            answers = [sealed.get(f"{gw.url}/healthz") for _ in range(3)]
            answers.append(chat("sg-notakey0-" + "x" * 40))
            assert [a.status_code for a in answers] == [200, 200, 200, 401]
            refused = sealed.get(f"{gw.url}/healthz")
            assert (refused.status_code, _code(refused)) == (503, "replay_guard_full")
            # Tenants are not held back by that, nor by each other.
            assert [chat(alpha).status_code for _ in range(16)] == [200] * 16
            over = chat(alpha)
            assert (over.status_code, _code(over)) == (503, "replay_guard_full")
            assert chat(beta).status_code == 200
    finally:
        gw.stop()


def test_a_replayed_keyed_request_is_refused(workdir: Path, fast_upstream: Proc) -> None:
    gw = start_gateway(workdir, fast_config(fast_upstream.port))
    try:
        key = gw.new_key("alpha")
        config = decode_key_configs(httpx.get(f"{gw.url}/.well-known/ohttp-gateway").content)[0]
        inner = encode_request(BHTTPRequest(b"POST", b"https", b"gateway", b"/v1/chat/completions", (
            (b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json"),
            (b"date", formatdate(usegmt=True).encode())), json.dumps(CHAT).encode()))
        statuses, sent = [], set()
        for _ in range(2):  # the same bytes twice; each answer opened with a context of its own
            sealed, context = encapsulate_request(config, inner, ephemeral_sk_for_testing=b"\x07" * 32)
            sent.add(sealed)
            outer = httpx.post(f"{gw.url}/.well-known/ohttp-gateway", content=sealed,
                               headers={"content-type": "message/ohttp-req"})
            assert outer.status_code == 200
            answer = decode_response(context.open_response(outer.content))
            statuses.append((answer.status, json.loads(answer.content).get("error", {}).get("code")))
        assert len(sent) == 1
        assert statuses == [(200, None), (400, "replayed_request")]
    finally:
        gw.stop()


def test_receipts_verify_while_the_keyless_share_is_used_up(workdir: Path,
                                                            fast_upstream: Proc) -> None:
    """The receipt helpers fetch the public checkpoint and proof with the tenant's key: sealed
    without one, they counted against the share anyone can use up."""
    gw = start_gateway(workdir, fast_config(fast_upstream.port, replay_max_entries=64,
                                            checkpoint_every_ms=50))
    try:
        key = gw.new_key("alpha")
        configs = httpx.get(f"{gw.url}/.well-known/ohttp-gateway").content
        identity = httpx.get(f"{gw.url}/.well-known/sealgate/identity").json()
        transport = SealedTransport(gateway_url=f"{gw.url}/.well-known/ohttp-gateway",
                                    key_source=StaticKeySource(configs))
        with httpx2.Client(transport=transport, timeout=10) as sealed:
            answer = sealed.post(f"{gw.url}/v1/chat/completions", json=CHAT,
                                 headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200
            assert [sealed.get(f"{gw.url}/healthz").status_code for _ in range(5)] == [200] * 4 + [503]
            # Until the record is in a published checkpoint (read in plaintext: the checkpoint
            # is public, and this wait must not use up more of the sealed keyless share).
            leaf = Receipt.parse(answer.headers["sealgate-receipt"]).leaf_index
            deadline = time.monotonic() + 60
            while _checkpoint_size(gw) <= leaf:
                assert time.monotonic() < deadline, "no checkpoint covers the request's record"
                time.sleep(0.05)
            verified = verify_response_receipt(
                sealed, gw.url, answer.headers["sealgate-receipt"],
                base64.b64decode(identity["audit_public_key"]), api_key=key)
        assert verified.receipt.record_id
    finally:
        gw.stop()
