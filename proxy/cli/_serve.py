"""``sealgate serve``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse
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

    from proxy.app import create_app
    from proxy.cli import _message
    from proxy.cli._common import load_settings

    settings = load_settings(args)
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.replace(**changes)
    settings.validate()
    app = create_app(settings)
    banner = (f"sealgate: serving on http://{settings.host}:{settings.port} "
              f"(models: {', '.join(settings.models)}; data: {settings.data_dir})")
    # A failed start-up is said once, below, with its cause and code.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: record.getMessage() != "Application startup failed. Exiting.")
    try:
        uvicorn.run(_announcing(app, banner), host=settings.host, port=settings.port,
                    log_level="warning", access_log=False, server_header=False, date_header=True,
                    ws="none",  # no WebSocket routes; the ws library echoes bad handshake keys
                    timeout_graceful_shutdown=10, proxy_headers=True,
                    forwarded_allow_ips=settings.trusted_proxy_list)
    except SystemExit:
        error = app.state["services"].startup_error
        if error is None:
            raise
        detail = _message(error) or f"internal error ({type(error).__name__})"
        print(f"sealgate: start-up failed: {detail}", file=sys.stderr)
        return 2
    return 0


def _announcing(app: Any, banner: str) -> Any:
    """The app, printing ``banner`` once start-up has succeeded (not before: the audit log,
    evidence and backends start in the lifespan) and keeping the framework's traceback of a
    failed start-up out of the output (the cause is printed once, with its code)."""

    async def announcing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def watched(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                print(banner, flush=True)
            elif message["type"] == "lifespan.startup.failed":
                message = {**message, "message": ""}
            await send(message)

        await app(scope, receive, watched)

    return announcing
