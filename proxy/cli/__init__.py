"""The ``sealgate`` command line: one argparse tree, one module per command group.

Each command module exposes ``register(subparsers)`` and sets ``func`` on its parsers; ``func``
takes the parsed namespace and returns the exit status.
"""

from __future__ import annotations

import policy  # noqa: F401  first: rego-cpp before any other C++ library (policy/_native.py)

# isort: split
import argparse
import importlib
import os
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
    parser.add_argument("--version", action="version", version=f"sealgate {_version()}")
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


def _version() -> str:
    """The installed distribution's version (what release manifests and upgrades name)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sealgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if sys.stdout is None:  # started with standard output closed: nothing could be shown
        print("sealgate: standard output is closed", file=sys.stderr)
        return 2
    from proxy.telemetry import configure_logging

    configure_logging()  # JSON lines on stderr, with the server's schema (unknown fields dropped)
    try:
        status: int = args.func(args)
        sys.stdout.flush()  # here, so that a reader that left is seen below
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (``sealgate audit show ID | head``): that is where the output ends,
        # not a failure. Nothing more can reach stdout, so it is closed without a flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        message = _message(exc)
        if message is None:
            raise
        print(f"sealgate: {message}", file=sys.stderr)
        return 2
    return status


_PACKAGES = frozenset({"proxy", "policy", "audit", "inference"})


def _message(exc: Exception) -> str | None:
    """What to print for a failure the user can act on; None for a bug (shown with its trace).

    Errors of the four packages carry a stable string code and print as "CODE: detail". Only
    they do: a foreign exception with a ``code`` attribute (a database driver's, whose text
    may quote the statement and its parameters) is not shown as one of ours."""
    if type(exc).__module__.split(".")[0] in _PACKAGES and isinstance(getattr(exc, "code", None), str):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"os_error: {exc.strerror}{where}"
    if isinstance(exc, EOFError):
        return "input_ended: standard input ended before the command had what it needs"
    if isinstance(exc, RecursionError):
        return "input_too_deep: the input is nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_encoding: an input file is not UTF-8 text"
    return None


if __name__ == "__main__":
    sys.exit(main())
