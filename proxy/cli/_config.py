"""``sealgate config show``: the effective configuration, secrets masked."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.cli._common import add_config_arg

    parser = sub.add_parser("config", help="inspect configuration")
    cmds = parser.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    show = cmds.add_parser("show", help="print the effective config (JSON, secrets masked)")
    add_config_arg(show)
    show.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from proxy.cli._common import load_settings, print_json

    print_json(load_settings(args).redacted())
    return 0
