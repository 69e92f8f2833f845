"""What the client takes from the relay or ingress in front of the gateway, which it does not
trust: answers are read up to a bound before anything authenticates them, and media types
compare as RFC 9110 says (case-insensitively). ``_Relay`` is fault injection: an inner
transport that answers as a hostile or rewriting relay would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import httpx2
import pytest

import proxy.client._transport as transport_module
from proxy.client import AsyncSealedTransport, SealedTransport, SealedTransportError, StaticKeySource
from proxy.gateway import GATEWAY_PATH
from proxy.ohttp import MediaType
from tests.ohttp._apps import AppState, build_app, serve

pytestmark = pytest.mark.timeout(60)
_PIECE = b"\x00" * (64 << 10)


class _Relay:
    """Answers every sealed request with ``status``, ``media_type`` and an endless body (or one
    that declares ``declared`` bytes), counting what the client pulls."""

    def __init__(self, status: int, media_type: str, declared: int | None = None) -> None:
        self.status, self.media_type, self.declared = status, media_type, declared
        self.pulled = 0

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": self.media_type}
        if self.declared is not None:
            headers["content-length"] = str(self.declared)
        return headers

    def _pieces(self) -> Iterator[bytes]:
        while True:
            self.pulled += len(_PIECE)
            yield _PIECE

    async def _apieces(self) -> AsyncIterator[bytes]:
        for piece in self._pieces():
            yield piece

    def sync(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(lambda _: httpx2.Response(
            self.status, headers=self._headers(), content=self._pieces()))

    def asynchronous(self) -> httpx2.MockTransport:
        async def answer(_: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(self.status, headers=self._headers(), content=self._apieces())
        return httpx2.MockTransport(answer)


def _keys() -> StaticKeySource:
    return StaticKeySource(AppState().keys.key_configs())


def _post_sync(relay: _Relay) -> SealedTransportError:
    sealed = SealedTransport(relay.sync(), gateway_url="http://relay.example" + GATEWAY_PATH,
                             key_source=_keys())
    with httpx2.Client(transport=sealed) as client, pytest.raises(SealedTransportError) as info:
        client.post("http://gateway.example/v1/embeddings", json={"input": "x"})
    return info.value


def _post_async(relay: _Relay) -> SealedTransportError:
    async def run() -> None:
        sealed = AsyncSealedTransport(relay.asynchronous(), key_source=_keys(),
                                      gateway_url="http://relay.example" + GATEWAY_PATH)
        async with httpx2.AsyncClient(transport=sealed) as client:
            await client.post("http://gateway.example/v1/embeddings", json={"input": "x"})

    with pytest.raises(SealedTransportError) as info:
        asyncio.run(run())
    return info.value


@pytest.fixture(autouse=True)
def _small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounds, scaled down so the tests pull megabytes rather than a quarter gigabyte."""
    monkeypatch.setattr(transport_module, "MAX_SEALED_RESPONSE_BYTES", 1 << 20)
    monkeypatch.setattr(transport_module, "MAX_REFUSAL_BYTES", 128 << 10)


@pytest.mark.parametrize("post", [_post_sync, _post_async], ids=["sync", "async"])
@pytest.mark.parametrize(("status", "media_type", "bound"), [
    (200, MediaType.RESPONSE, 1 << 20), (502, "text/plain", 128 << 10)], ids=["sealed", "refusal"])
def test_an_endless_answer_is_refused_at_its_bound(post: Callable[[_Relay], SealedTransportError],
                                                  status: int, media_type: str, bound: int) -> None:
    relay = _Relay(status, media_type)
    error = post(relay)
    assert error.code == "response_invalid" and f"larger than {bound} bytes" in str(error)
    assert bound < relay.pulled <= bound + len(_PIECE)


@pytest.mark.parametrize("post", [_post_sync, _post_async], ids=["sync", "async"])
def test_a_declared_length_past_the_bound_is_refused_before_reading(
        post: Callable[[_Relay], SealedTransportError]) -> None:
    relay = _Relay(200, MediaType.RESPONSE, declared=(1 << 20) + 1)
    assert post(relay).code == "response_invalid"
    assert relay.pulled == 0


class _Uppercasing(httpx2.BaseTransport):
    """A relay that forwards to the gateway and writes the answer's media type in capitals."""

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        answer = self._inner.handle_request(request)
        answer.read()
        headers = [(k, v.upper() if k.lower() == "content-type" else v)
                   for k, v in answer.headers.items() if k.lower() != "content-encoding"]
        return httpx2.Response(answer.status_code, headers=headers, content=answer.content)


def test_media_types_compare_case_insensitively() -> None:
    state = AppState()
    with serve(build_app(state)) as port:
        sealed = SealedTransport(_Uppercasing(), gateway_url=f"http://127.0.0.1:{port}{GATEWAY_PATH}",
                                 key_source=StaticKeySource(state.keys.key_configs()))
        with httpx2.Client(transport=sealed) as client:
            answer = client.post(f"http://127.0.0.1:{port}/echo", json={"a": 1})
    assert (answer.status_code, answer.json()["sealed"]) == (200, True)


class _StrippingIngress(httpx2.BaseTransport):
    """An ingress that publishes the gateway under ``/sealgate`` and strips that prefix."""

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()
        self.paths: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.paths.append(request.url.path)
        assert request.url.path.startswith("/sealgate/")
        request.url = request.url.copy_with(path=request.url.path.removeprefix("/sealgate"))
        return self._inner.handle_request(request)


def test_a_gateway_published_under_a_path_prefix_gets_inner_paths_without_it() -> None:
    """``https://host/sealgate/.well-known/ohttp-gateway``: the outer POST goes there, and the
    sealed request inside names the path the gateway serves (``/echo``, not ``/sealgate/echo``)."""
    state = AppState()
    ingress = _StrippingIngress()
    with serve(build_app(state)) as port:
        base = f"http://127.0.0.1:{port}/sealgate"
        sealed = SealedTransport(ingress, gateway_url=base + GATEWAY_PATH,
                                 key_source=StaticKeySource(state.keys.key_configs()))
        with httpx2.Client(transport=sealed) as client:
            answers = [client.post(f"{base}/echo", json={"a": 1}),
                       client.post(f"{base}/echo?x=1", json={"a": 2})]
    assert [(a.status_code, a.json()["sealed"]) for a in answers] == [(200, True)] * 2
    assert ingress.paths == ["/sealgate" + GATEWAY_PATH] * 2
