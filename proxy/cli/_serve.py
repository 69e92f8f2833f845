"""``sealgate serve``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.cli._common import add_config_arg

    parser = sub.add_parser("serve", help="run the gateway")
    add_config_arg(parser)
    parser.add_argument("--host", help="listen address (overrides config and SEALGATE_HOST)")
    parser.add_argument("--port", type=int, help="listen port (overrides config and SEALGATE_PORT)")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy._listen import bind_listener
    from proxy.app import create_app
    from proxy.cli import _message
    from proxy.cli._common import load_settings
    from proxy.telemetry import detach_native_stderr, forbid_core_dumps

    settings = load_settings(args)
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.replace(**changes)
    settings.validate()
    try:  # bound first: a port in use is said now, not after the model has loaded
        sock = bind_listener(settings.host, settings.port)
    except ValueError as exc:
        print(f"sealgate: start-up failed: {exc}", file=sys.stderr)
        return 2
    detach_native_stderr()  # before any native library starts: none can log request text
    forbid_core_dumps()  # no core file holding what is in memory
    app = create_app(settings)
    banner = (f"sealgate: serving on http://{settings.host}:{settings.port} "
              f"(models: {', '.join(settings.models)}; data: {settings.data_dir})")
    # A failed start-up is said once, below, with its cause and code.
    logging.getLogger("uvicorn.error").addFilter(_StartupFailures())

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)  # exits on a failed start-up or bind
            print(banner, flush=True)  # listening now, not merely started

        def handle_exit(self, sig: int, frame: Any) -> None:
            # Requests cut off from here on are the server's doing: their records say so.
            app.state["services"].openai.stopping = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        _quiet_failure(app), host=settings.host, port=settings.port, log_level="warning",
        access_log=False, server_header=False, date_header=True,
        ws="none",  # no WebSocket routes; the ws library echoes bad handshake keys
        timeout_graceful_shutdown=10, proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxy_list)
    server = Server(config)
    try:
        server.run(sockets=[sock])
    except SystemExit:
        error = app.state["services"].startup_error
        if error is None:
            raise
        detail = _message(error) or f"internal error ({type(error).__name__})"
        print(f"sealgate: start-up failed: {detail}", file=sys.stderr)
        return 2
    return 0 if server.started else 2


class _StartupFailures(logging.Filter):
    """Keeps uvicorn's own line about a failed start-up out of the output (the cause is said
    once, with its code)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Application startup failed. Exiting."


_STOPPING = (b'{"error": {"message": "the gateway is shutting down; retry the request", '
             b'"type": "api_error", "param": null, "code": "gateway_shutdown"}}')


def _quiet_failure(app: Any) -> Any:
    """The app, keeping the framework's traceback of a failed start-up out of the output (the
    cause is printed once, with its code). A request the server cancels when its graceful
    shutdown runs out (uvicorn cancels what is still running) is answered 503
    ``gateway_shutdown``, an OpenAI error the SDKs retry, instead of uvicorn's plain-text 500
    and a traceback; one whose answer had begun is cut off, with one line in the log."""

    async def quiet(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if scope["type"] != "http":
                    raise
                # A stream that had begun refuses another start (the server raises): uvicorn
                # closes its connection unfinished, and the client sees it cut off (its
                # completion record says gateway_shutdown).
                with contextlib.suppress(RuntimeError):
                    await send({"type": "http.response.start", "status": 503, "headers": [
                        (b"content-type", b"application/json"), (b"retry-after", b"1"),
                        (b"content-length", str(len(_STOPPING)).encode())]})
                    await send({"type": "http.response.body", "body": _STOPPING})
            return

        async def watched(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                message = {**message, "message": ""}
            await send(message)

        await app(scope, receive, watched)

    return quiet
