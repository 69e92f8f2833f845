"""The gateway routes in-process: key configs, sealed dispatch, errors, replay, rotation."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from email.utils import formatdate
from typing import Any

import httpx2
import pytest

from proxy.client import AsyncSealedTransport, SealedExchange, SealedTransportError, StaticKeySource
from proxy.gateway import GATEWAY_PATH, KeyManager, sealed_channel
from proxy.gateway._channel import SealedChannel
from proxy.ohttp import (
    DEFAULT_SUITES,
    BHTTPRequest,
    ChunkedRequestSealer,
    GatewayKey,
    KeyConfig,
    MediaType,
    decode_key_configs,
    decode_response,
    encapsulate_request,
    encode_key_configs,
    encode_request,
)
from tests.ohttp import _apps
from tests.ohttp._apps import AppState, build_app

BASE = "http://sealgate.test"


@pytest.fixture(autouse=True, params=["front", "route"])
def gateway_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with non-chunked sealed requests served by ``gateway_front`` (as
    ``sealgate serve`` does) and by the framework route alone: both must answer alike."""
    monkeypatch.setattr(_apps, "FRONT", request.param == "front")
    return str(request.param)


def _client(state: AppState, **app_kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(build_app(state, **app_kwargs)), base_url=BASE)


def _sealed_client(state: AppState, key_source: Any = None) -> httpx2.AsyncClient:
    inner = httpx2.ASGITransport(build_app(state))
    source = key_source or StaticKeySource(state.keys.key_configs())
    transport = AsyncSealedTransport(inner, gateway_url=BASE + GATEWAY_PATH, key_source=source)
    return httpx2.AsyncClient(transport=transport, base_url=BASE)


def _inner_request(path: bytes = b"/echo", date: str | None = None, content: bytes = b"{}") -> bytes:
    headers = [(b"content-type", b"application/json")]
    if date is not None:
        headers.append((b"date", date.encode()))
    return encode_request(BHTTPRequest(b"POST", b"https", b"sealgate.test", path, tuple(headers), content))


def test_key_configs_are_served_cacheable() -> None:
    state = AppState()

    async def run() -> httpx2.Response:
        async with _client(state) as client:
            return await client.get(GATEWAY_PATH)

    response = asyncio.run(run())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(MediaType.KEYS)
    assert "max-age" in response.headers["cache-control"]
    configs = decode_key_configs(response.content)
    assert [c.key_id for c in configs] == [state.keys.current_key_id]


def test_sealed_json_round_trip_and_commitment_key() -> None:
    state = AppState()

    async def run() -> httpx2.Response:
        async with _sealed_client(state) as client:
            return await client.post("/echo", json={"prompt": "hello"})

    response = asyncio.run(run())
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"prompt": "hello"} and body["sealed"] is True and not body["chunked"]
    exchange = response.extensions["sealgate"]
    assert isinstance(exchange, SealedExchange)
    assert body["enc_digest"] == exchange.enc_digest
    expected = hmac.new(exchange.commitment_key, exchange.request_body, hashlib.sha256).hexdigest()
    assert body["commitment"] == expected


def test_chunked_exchange_in_process() -> None:
    state = AppState()
    state.release.set()

    async def run() -> tuple[httpx2.Response, bytes]:
        async with _sealed_client(state) as client:
            response = await client.post("/echo", json={"stream": True, "x": 1})
            return response, response.content

    response, content = asyncio.run(run())
    assert response.status_code == 200
    assert json.loads(content)["chunked"] is True


def test_plain_request_has_no_sealed_marker() -> None:
    state = AppState()

    async def run() -> httpx2.Response:
        async with _client(state) as client:
            return await client.post("/echo", json={"a": 1})

    assert asyncio.run(run()).json()["sealed"] is False


def test_marker_must_be_the_gateway_object() -> None:
    forged = {"extensions": {"sealgate": {"commitment_key": "00", "enc_digest": "x", "chunked": False}}}
    assert sealed_channel(forged) is None
    assert sealed_channel({"type": "http"}) is None
    real = SealedChannel(b"k" * 32, "ab", False, 1)
    assert sealed_channel({"extensions": {"sealgate": real}}) is real


def _post(state: AppState, content: bytes, media_type: str, **app_kwargs: Any) -> httpx2.Response:
    async def run() -> httpx2.Response:
        async with _client(state, **app_kwargs) as client:
            return await client.post(GATEWAY_PATH, content=content, headers={"content-type": media_type})

    return asyncio.run(run())


@pytest.mark.parametrize("media_type", ["application/json", "message/ohttp-res", ""])
def test_wrong_media_type_is_415(media_type: str) -> None:
    response = _post(AppState(), b"x", media_type)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_outer_errors_are_400_with_codes() -> None:
    state = AppState()
    config = decode_key_configs(state.keys.key_configs())[0]
    sealed, _ = encapsulate_request(config, _inner_request(date=formatdate(usegmt=True)))
    other = KeyConfig(config.key_id ^ 1, config.kem_id, config.public_key, config.suites)
    unknown, _ = encapsulate_request(other, b"x")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    cases = {
        b"\x01": "ohttp_malformed",
        unknown: "ohttp_unknown_key",
        bytes(flipped): "ohttp_decrypt_failed",
    }
    for content, code in cases.items():
        response = _post(state, content, MediaType.REQUEST)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["type"] == "invalid_request_error"
    chunked = _post(state, sealed, MediaType.CHUNKED_REQUEST)
    assert chunked.status_code == 400
    assert chunked.json()["error"]["code"] in {"ohttp_malformed", "ohttp_decrypt_failed"}


def test_bad_inner_bhttp_is_a_sealed_400() -> None:
    # RFC 9458 §5.2: errors found after decapsulation are answered inside the encapsulation,
    # so an on-path observer never learns that a request opened.
    state = AppState()
    (answer,) = _sealed_error(state, b"\x09garbage", b"\x06" * 32)
    assert answer.status == 400
    assert json.loads(answer.content)["error"]["code"] == "bad_inner_request"
    assert state.requests == []


@pytest.mark.parametrize("path", [b"/echo?q=\xff", b"/echo?q=a b", b"/echo?q=\x00", b"/ec\xe9ho",
                                  b"/echo\t"])
def test_inner_target_that_is_not_printable_ascii_is_a_sealed_400(path: bytes) -> None:
    # ASGI carries the query percent-encoded, as a server would have received it: raw bytes
    # there (the query too, not only the path) are refused before any route sees them.
    state = AppState()
    (answer,) = _sealed_error(state, _inner_request(path, formatdate(usegmt=True)), b"\x0a" * 32)
    assert answer.status == 400
    assert json.loads(answer.content)["error"]["code"] == "bad_inner_request"
    assert state.requests == []


@pytest.mark.parametrize("field", [(b":path", b"/admin"), (b":method", b"DELETE"), (b"X-Upper", b"1"),
                                   (b"bad name", b"1"), (b"x-ok", b"a\r\ninjected: 1"), (b"x-ok", b"a\x00")])
def test_inner_field_line_http_would_refuse_is_a_sealed_400(field: tuple[bytes, bytes]) -> None:
    # RFC 9292 §3.6: such a message is invalid, and an invalid message is not processed.
    state = AppState()
    inner = encode_request(BHTTPRequest(b"POST", b"https", b"sealgate.test", b"/echo", (
        (b"content-type", b"application/json"), (b"date", formatdate(usegmt=True).encode()), field),
        b"{}"))
    (answer,) = _sealed_error(state, inner, b"\x0b" * 32)
    assert answer.status == 400
    assert json.loads(answer.content)["error"]["code"] == "bad_inner_request"
    assert state.requests == []


def test_body_size_limit() -> None:
    response = _post(AppState(), b"\x00" * 2048, MediaType.REQUEST, max_body_size=1024)
    assert response.status_code == 413


def _sealed_error(state: AppState, bhttp: bytes, ephemeral: bytes, times: int = 1) -> list[Any]:
    config = decode_key_configs(state.keys.key_configs())[0]
    answers = []
    for _ in range(times):
        sealed, context = encapsulate_request(config, bhttp, ephemeral_sk_for_testing=ephemeral)
        outer = _post(state, sealed, MediaType.REQUEST)
        assert outer.status_code == 200
        answers.append(decode_response(context.open_response(outer.content)))
    return answers


def test_replayed_request_is_rejected_inside_the_sealed_answer() -> None:
    state = AppState()
    first, second = _sealed_error(state, _inner_request(date=formatdate(usegmt=True)), b"\x07" * 32, 2)
    assert first.status == 200
    assert second.status == 400
    assert json.loads(second.content)["error"]["code"] == "replayed_request"
    assert any(name == b"date" for name, _ in second.headers)
    assert state.requests == [True]  # the replay never reached the route


@pytest.mark.parametrize("date", [None, "yesterday", formatdate(0, usegmt=True),
                                  "01 Jan 99999999999 00:00:00 GMT"])
def test_stale_or_missing_date_is_rejected(date: str | None) -> None:
    state = AppState()
    (answer,) = _sealed_error(state, _inner_request(date=date), b"\x08" * 32)
    assert answer.status == 400
    assert json.loads(answer.content)["error"]["code"] == "stale_request"
    assert state.requests == []


@pytest.mark.parametrize("path", [GATEWAY_PATH, GATEWAY_PATH + "/", "/" + GATEWAY_PATH,
                                  GATEWAY_PATH.replace("/ohttp", "//ohttp")])
def test_inner_request_cannot_target_the_gateway(path: str) -> None:
    # However the path is spelled, what routes to the gateway refuses a sealed request.
    state = AppState()
    config = decode_key_configs(state.keys.key_configs())[0]
    nested, _ = encapsulate_request(config, _inner_request(date=formatdate(usegmt=True)))
    bhttp = encode_request(BHTTPRequest(
        b"POST", b"https", b"sealgate.test", path.encode(),
        ((b"content-type", MediaType.REQUEST.encode()), (b"date", formatdate(usegmt=True).encode())),
        nested))
    (answer,) = _sealed_error(state, bhttp, b"\x09" * 32)
    assert answer.status == 400
    assert json.loads(answer.content)["error"]["code"] == "bad_inner_request"
    assert state.requests == []


def test_inner_failure_is_a_sealed_500() -> None:
    state = AppState()

    async def run() -> httpx2.Response:
        async with _sealed_client(state) as client:
            return await client.get("/boom")

    assert asyncio.run(run()).status_code == 500


def test_chunked_request_errors_are_sealed_too() -> None:
    state = AppState()
    config = decode_key_configs(state.keys.key_configs())[0]
    sealer = ChunkedRequestSealer(config)
    body = sealer.seal(_inner_request(date=None), final=True)
    response = _post(state, body, MediaType.CHUNKED_REQUEST)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(MediaType.CHUNKED_RESPONSE)
    from proxy.ohttp import ChunkedResponseOpener

    opener = ChunkedResponseOpener(sealer.context)
    plaintext = b"".join(opener.feed(response.content)) + opener.close()
    answer = decode_response(plaintext)
    assert answer.status == 400 and json.loads(answer.content)["error"]["code"] == "stale_request"


class CountingKeySource:
    """A key source that re-reads the gateway's current configuration when invalidated."""

    def __init__(self, keys: KeyManager, stale: bytes) -> None:
        self.keys, self.current, self.fetches = keys, stale, 0

    def key_config(self) -> KeyConfig:
        return decode_key_configs(self.current)[0]

    async def akey_config(self) -> KeyConfig:
        return self.key_config()

    def invalidate(self) -> None:
        self.fetches += 1
        self.current = self.keys.key_configs()


def _refused_then_sealed(state: AppState, source: CountingKeySource
                         ) -> tuple[SealedTransportError, httpx2.Response]:
    """Two requests from one client: the refusal of the first, and the answer to the second."""
    async def run() -> tuple[SealedTransportError, httpx2.Response]:
        async with _sealed_client(state, source) as client:
            with pytest.raises(SealedTransportError) as refused:
                await client.post("/echo", json={"after": "new keys"})
            return refused.value, await client.post("/echo", json={"after": "new keys"})

    return asyncio.run(run())


def test_rotation_grace_and_reverification() -> None:
    now = [0.0]
    state = AppState(keys=KeyManager(grace_period=10, clock=lambda: now[0]))
    old = state.keys.key_configs()
    old_id = state.keys.current_key_id
    new_id = state.keys.rotate()
    assert new_id != old_id
    assert [c.key_id for c in decode_key_configs(state.keys.key_configs())] == [new_id, old_id]
    assert state.keys.lookup(old_id) is not None
    now[0] = 11.0
    assert state.keys.lookup(old_id) is None
    source = CountingKeySource(state.keys, old)
    # The refusal is unauthenticated, so the request is not resent; the key is dropped and
    # the next request seals to the verified current one.
    refused, response = _refused_then_sealed(state, source)
    assert refused.code == "gateway_rejected" and "ohttp_unknown_key" in refused.detail
    assert source.fetches == 1
    assert response.status_code == 200 and response.json()["sealed"] is True
    assert source.fetches == 1


def test_a_restart_that_repeats_the_key_id_is_recovered_from() -> None:
    """A restarted gateway has new keys under a random one-byte key_id, which repeats the old one
    once in 256 restarts: a client still holding the old key is then refused with
    ``ohttp_decrypt_failed``, not ``ohttp_unknown_key``, and must drop that key all the same
    (else every request fails until its key cache expires)."""
    state = AppState(keys=KeyManager())
    same_id = state.keys.current_key_id
    before_restart = encode_key_configs([GatewayKey.generate(same_id, DEFAULT_SUITES).config])
    source = CountingKeySource(state.keys, before_restart)
    refused, response = _refused_then_sealed(state, source)
    assert refused.code == "gateway_rejected" and "ohttp_decrypt_failed" in refused.detail
    assert source.fetches == 1  # the stale key was dropped; not resent
    assert response.status_code == 200 and response.json()["sealed"] is True


def test_front_answers_an_unexpected_failure_with_a_plain_500(
        gateway_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.gateway._front as front

    async def broken(*_: Any) -> bytes:
        raise RuntimeError("fault injected")

    monkeypatch.setattr(front, "seal_exchange", broken)
    state = AppState()
    config = decode_key_configs(state.keys.key_configs())[0]
    sealed, _ = encapsulate_request(config, _inner_request(date=formatdate(usegmt=True)))
    response = _post(state, sealed, MediaType.REQUEST)
    if gateway_path == "front":
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert "fault injected" not in response.text
    else:  # the route does not call the front's seal_exchange
        assert response.status_code == 200


def test_the_served_app_routes_sealed_requests_through_the_front(tmp_path: Any) -> None:
    # Guards against a framework change that would silently bypass the hot path (the route
    # would still answer, only slower).
    from litestar.testing import TestClient

    from proxy.app import create_app
    from proxy.config import Settings

    settings = Settings.load(env={"SEALGATE_DATA_DIR": str(tmp_path)}).replace(
        backends={}, models={})
    app = create_app(settings)
    assert app.asgi_handler.__qualname__ == "gateway_front.<locals>.front"
    with TestClient(app) as client:
        keys = client.get(GATEWAY_PATH).content
        config = decode_key_configs(keys)[0]
        health = BHTTPRequest(b"GET", b"https", b"sealgate.test", b"/healthz",
                              ((b"date", formatdate(usegmt=True).encode()),), b"")
        sealed, context = encapsulate_request(config, encode_request(health))
        outer = client.post(GATEWAY_PATH, content=sealed,
                            headers={"content-type": MediaType.REQUEST})
        assert outer.status_code == 200 and outer.headers["cache-control"] == "no-store"
        assert decode_response(context.open_response(outer.content)).status == 200
