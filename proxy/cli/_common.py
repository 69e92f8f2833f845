"""Helpers shared by the command modules: settings loading and output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.config import Settings

if TYPE_CHECKING:
    from proxy.attestation import Collateral

__all__ = ["add_config_arg", "fail", "load_collateral", "load_settings", "print_json"]


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


def load_collateral(folder: Path | None) -> Collateral | None:
    """The collateral in ``--collateral DIR``, if given; ``ValueError`` when it cannot be read."""
    if folder is None:
        return None
    from proxy.attestation import Collateral

    try:
        return Collateral.from_dir(folder)
    except OSError as exc:
        raise ValueError(f"cannot read the collateral folder {folder}: "
                         f"{exc.strerror or exc}") from exc
