"""Model routing: readiness of several backends is checked at once."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from inference import BackendRouter, ModelRoute, OpenAIBackend, OpenAIConfig, RetentionTier


def test_readiness_checks_run_at_once() -> None:
    # Upstreams that accept connections and never answer (a fault): each check takes its whole
    # 2 s timeout, so three checked one after another would take 6 s.
    silent = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    try:
        backends = {f"b{i}": OpenAIBackend(f"b{i}", OpenAIConfig(
            url=f"http://127.0.0.1:{s.getsockname()[1]}/v1")) for i, s in enumerate(silent)}
        routes = [ModelRoute(name, name, RetentionTier.ATTESTED_ZERO) for name in backends]
        router = BackendRouter(routes, backends)

        async def run() -> tuple[dict[str, bool], float]:
            await router.start()
            try:
                started = time.monotonic()
                return await router.ready(), time.monotonic() - started
            finally:
                await router.close()

        states, took = asyncio.run(run())
        assert states == {"b0": False, "b1": False, "b2": False}
        assert took < 4.0, f"readiness took {took:.1f} s"
    finally:
        for server in silent:
            server.close()


def test_an_upstream_that_answers_garbage_is_not_ready() -> None:
    """An answer that is not HTTP (a fault: a socket that writes a broken status line) makes
    the backend not ready; it was an error that failed /readyz with a 502, and start-up of a
    vLLM backend pointed at such an address."""
    garbage = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                conn, _ = garbage.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 abc\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        backend = OpenAIBackend("g", OpenAIConfig(url=f"http://127.0.0.1:{garbage.getsockname()[1]}/v1"))
        router = BackendRouter([ModelRoute("g", "g", RetentionTier.ATTESTED_ZERO)], {"g": backend})

        async def run() -> tuple[bool, dict[str, bool]]:
            await router.start()
            try:
                return await backend.ready(), await router.ready()
            finally:
                await router.close()

        assert asyncio.run(run()) == (False, {"g": False})
    finally:
        garbage.close()
