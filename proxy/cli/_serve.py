"""``sealgate serve``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse

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
    from proxy.cli._common import load_settings

    settings = load_settings(args)
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.replace(**changes)
    settings.validate()
    app = create_app(settings)
    print(f"sealgate: serving on http://{settings.host}:{settings.port} "
          f"(models: {', '.join(settings.models)}; data: {settings.data_dir})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                access_log=False, server_header=False, date_header=True, timeout_graceful_shutdown=10)
    return 0
