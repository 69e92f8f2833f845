"""CountingCore: a measurement tool, not a model. It wraps the llama.cpp server core that a
``LlamaCppBackend`` drives (its ``_server``, an ``xllamacpp.Server``) and, for every streamed
generation call, counts the chunks of generated text the core hands to the backend's callback
(one per token, but for the few the core holds back until a character is whole), the last
finish reason it gave and whether the call has returned. Everything passes through unchanged,
the callback's answer (stop or go on) included.

Tests assert on what was generated instead of on how long it took: a call that a cancellation
stopped has returned with no finish reason, short of its ``max_tokens``; one that ran on would
have ended with ``length`` after all of them, however fast the machine.

In this process: ``with counting(backend) as core: ...``. In a gateway process: start it with
:func:`counting_env` (``sitecustomize`` in ``core_counter_site/`` wraps ``xllamacpp.Server``
when the gateway imports it; nothing is imported before that, so rego-cpp still loads first),
and read its calls with :func:`gateway_calls`. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

SITE = Path(__file__).resolve().parent / "core_counter_site"
ROOT = Path(__file__).resolve().parents[2]
ENV = "SEALGATE_TEST_CORE_COUNTS"
"""The JSON-lines file a gateway process's counter writes to."""


@dataclass
class CoreCall:
    """One streamed generation call to the core."""

    index: int
    max_tokens: int | None
    text_chunks: int = 0
    """Chunks with generated text so far."""
    finish_reason: str | None = None
    """The last finish reason the core sent; None while running, or when it was stopped."""
    returned: bool = False
    """Whether the core's call has returned (its slot is free again)."""


class CountingCore:
    """Wraps an ``xllamacpp.Server``; counts its streamed calls (:class:`CoreCall`), and
    appends each call's first text and its return to ``sink`` (JSON lines) when given."""

    def __init__(self, inner: Any, sink: Path | None = None) -> None:
        self._inner = inner
        self._sink = sink
        self._lock = threading.Lock()
        self.calls: list[CoreCall] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def handle_completions(self, request: Any, *callback: Any) -> Any:
        return self._counted(self._inner.handle_completions, request, callback)

    def handle_chat_completions(self, request: Any, *callback: Any) -> Any:
        return self._counted(self._inner.handle_chat_completions, request, callback)

    def _counted(self, handler: Callable[..., Any], request: Any, callback: tuple[Any, ...]) -> Any:
        if not callback:  # not streamed: the backend's start-up probes
            return handler(request)
        (on_chunk,) = callback
        limit = request.get("max_tokens") if isinstance(request, dict) else None
        with self._lock:
            call = CoreCall(len(self.calls), limit if isinstance(limit, int) else None)
            self.calls.append(call)

        def counting(chunk: Any) -> Any:
            for choice in (chunk.get("choices") or ()) if isinstance(chunk, dict) else ():
                delta = choice.get("delta") or {}
                if choice.get("text") or (isinstance(delta, dict) and delta.get("content")):
                    call.text_chunks += 1
                    if call.text_chunks == 1:
                        self._write(call, "first_text")
                if choice.get("finish_reason"):
                    call.finish_reason = choice["finish_reason"]
            return on_chunk(chunk)

        try:
            return handler(request, counting)
        finally:
            call.returned = True
            self._write(call, "returned")

    def _write(self, call: CoreCall, event: str) -> None:
        if self._sink is None:
            return
        line = json.dumps({"event": event, **asdict(call)}) + "\n"
        with self._lock, self._sink.open("a") as out:
            out.write(line)


@contextlib.contextmanager
def counting(backend: Any) -> Iterator[CountingCore]:
    """Count the calls ``backend`` (a loaded ``LlamaCppBackend`` in this process) makes to its
    core while the block runs."""
    real = backend._server
    backend._server = core = CountingCore(real)
    try:
        yield core
    finally:
        backend._server = real


async def until(condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` on the event loop (the core's calls run on other threads) until it
    holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.01)


def counting_env(sink: Path) -> dict[str, str]:
    """Environment for ``start_gateway(..., extra_env=...)``: the gateway's core is counted, and
    its calls are written to ``sink``."""
    path = os.pathsep.join(p for p in (str(SITE), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {ENV: str(sink), "PYTHONPATH": path}


def gateway_calls(sink: Path) -> dict[int, dict[str, Any]]:
    """The gateway's counted calls by index, each as its latest event (``first_text`` while it
    runs, ``returned`` once it has returned)."""
    calls: dict[int, dict[str, Any]] = {}
    if sink.exists():
        for line in sink.read_text().splitlines():
            if line.endswith("}"):  # a line being written is left for the next read
                event = json.loads(line)
                calls[event["index"]] = event
    return calls


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps ``xllamacpp.Server`` in a :class:`CountingCore` once the gateway imports it."""

    def __init__(self, sink: Path) -> None:
        self._sink = sink

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "xllamacpp":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader, sink = spec.loader, self._sink
        exec_module = loader.exec_module

        def wrapped(module: ModuleType) -> None:
            exec_module(module)
            server = module.Server
            module.Server = lambda *args, **kwargs: CountingCore(server(*args, **kwargs), sink)

        loader.exec_module = wrapped  # type: ignore[method-assign]
        return spec


def install_from_env() -> None:
    """Called by ``core_counter_site/sitecustomize.py`` at interpreter start-up."""
    sink = os.environ.get(ENV)
    if sink:
        sys.meta_path.insert(0, _WrapOnImport(Path(sink)))
