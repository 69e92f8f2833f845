"""The ``sealgate`` command line: one argparse tree, one module per command group.

Each command module exposes ``register(subparsers)`` and sets ``func`` on its parsers; ``func``
takes the parsed namespace and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Command groups, in the order `sealgate --help` lists them. A module that is not present in this
# build is skipped, so a partial install still gives a working CLI.
_GROUPS = (
    "serve",
    "config",
    "tenants",
    "policy",
    "audit",
    "attest",
    "client_proxy",
    "evidence",
    "users",
)


# Command word → the module that registers it; only that module is imported for a command, so
# `sealgate keys create` does not load the server or the client SDK.
_COMMANDS = {"keys": "tenants", "client-proxy": "client_proxy"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sealgate", description="Sealgate confidential LLM gateway")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = _COMMANDS.get(command or "", command)
    for name in _GROUPS if wanted not in _GROUPS else (wanted,):
        try:
            module = importlib.import_module(f"proxy.cli._{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"proxy.cli._{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Every package's errors carry a stable string code: show "CODE: detail", no trace.
        if not isinstance(getattr(exc, "code", None), str):
            raise
        print(f"sealgate: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
