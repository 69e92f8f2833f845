"""Helpers shared by the command modules: settings loading and output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxy.config import Settings

__all__ = ["add_config_arg", "fail", "load_settings", "print_json"]


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML config file (default: $SEALGATE_CONFIG, else built-in defaults)")


def load_settings(args: argparse.Namespace) -> Settings:
    path = getattr(args, "config", None)
    return Settings.load(path) if path else Settings.from_env()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def fail(message: str, status: int = 1) -> int:
    print(f"sealgate: {message}", file=sys.stderr)
    return status
