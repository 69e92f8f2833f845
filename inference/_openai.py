"""Any OpenAI-compatible upstream (vLLM, llama.cpp server, a zero-retention provider) over httpx.

The httpx client runs on aiohttp's connection pool and HTTP/1.1 parser (``httpx-aiohttp``, the
transport the official SDK offers for async use): the same calls, about half the per-request
cost of httpx's default transport, which matters on the gateway's hot path (``make bench``).
Streaming is passed through as it arrives: each upstream SSE event becomes one chunk here, with
no buffering beyond the event itself. Upstream error bodies are never relayed (they may echo
content); only their status class is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport

from inference._base import GenerationKind, Json
from inference._errors import BackendRejected, BackendUnavailable

__all__ = ["OpenAIBackend", "OpenAIConfig"]

_PATHS = {"chat": "/chat/completions", "completions": "/completions"}


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """Settings of an OpenAI-compatible upstream."""

    url: str = "http://127.0.0.1:8000/v1"
    """Base URL including ``/v1``."""
    api_key_env: str = ""
    """Name of the environment variable holding the upstream API key (never the key itself)."""
    timeout_s: float = 120.0
    """Read timeout for one request."""
    connect_timeout_s: float = 5.0
    """Connect timeout."""
    max_connections: int = 64
    """Connection pool size."""


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Translate httpx failures at the seam (STYLE: foreign exceptions never escape)."""
    try:
        yield
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise BackendUnavailable("the upstream timed out") from exc
    except (httpx.HTTPError, aiohttp.ClientError) as exc:
        raise BackendUnavailable(f"the upstream is unreachable ({type(exc).__name__})") from exc
    except msgspec.DecodeError as exc:
        raise BackendUnavailable("the upstream sent a malformed response") from exc


def _check_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if response.status_code in (400, 404, 413, 422):
        raise BackendRejected(f"the upstream rejected the request (HTTP {response.status_code})")
    raise BackendUnavailable(f"the upstream failed (HTTP {response.status_code})")


class OpenAIBackend:
    """Forwards requests to an OpenAI-compatible HTTP upstream."""

    def __init__(self, name: str, config: OpenAIConfig, *, transport: Any = None) -> None:
        self.name = name
        self._config = config
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        headers = {}
        if self._config.api_key_env:
            key = os.environ.get(self._config.api_key_env, "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=self._config.max_connections)
        self._client = httpx.AsyncClient(
            base_url=self._config.url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self._config.timeout_s, connect=self._config.connect_timeout_s),
            transport=self._transport or AiohttpTransport(limits=limits, trust_env=False),
            trust_env=False,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _require(self) -> httpx.AsyncClient:
        if self._client is None:
            raise BackendUnavailable(f"backend {self.name!r} is not started")
        return self._client

    async def ready(self) -> bool:
        try:
            with _mapped_errors():
                response = await self._require().get("/models", timeout=2.0)
        except BackendUnavailable:
            return False
        return response.status_code == 200

    async def _post(self, path: str, body: Mapping[str, Any]) -> Json:
        with _mapped_errors():
            response = await self._require().post(path, content=msgspec.json.encode(body),
                                                  headers={"Content-Type": "application/json"})
            _check_status(response)
            doc = msgspec.json.decode(response.content)
        if not isinstance(doc, dict):
            raise BackendUnavailable("the upstream sent a malformed response")
        return doc

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any]) -> Json:
        return await self._post(_PATHS[kind], {**body, "stream": False})

    async def embed(self, body: Mapping[str, Any]) -> Json:
        return await self._post("/embeddings", body)

    async def stream(self, kind: GenerationKind, body: Mapping[str, Any]) -> AsyncIterator[Json]:
        request = {**body, "stream": True}
        client = self._require()
        with _mapped_errors():
            async with client.stream("POST", _PATHS[kind], content=msgspec.json.encode(request),
                                     headers={"Content-Type": "application/json"}) as response:
                _check_status(response)
                done = False
                async for line in response.aiter_lines():
                    # Read to the end even after [DONE], so the connection goes back to the pool.
                    if done or not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        continue
                    chunk = msgspec.json.decode(data)
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise BackendUnavailable("the upstream failed mid-stream")
                    yield chunk
