"""Helpers shared by the command modules: settings loading and output."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from proxy.config import Settings, ignored_variables

__all__ = ["add_config_arg", "fail", "load_settings", "missing_state", "print_json"]


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML config file (default: $SEALGATE_CONFIG, else built-in defaults)")


def load_settings(args: argparse.Namespace) -> Settings:
    """The effective settings; a warning on stderr for each ``SEALGATE_*`` variable that nothing
    reads (its setting, if one was meant, keeps its default)."""
    path = getattr(args, "config", None)
    settings = Settings.load(path) if path else Settings.from_env()
    for variable in ignored_variables():
        print(f"sealgate: warning: {variable} is not a setting and is ignored "
              "(`sealgate config show` lists the settings)", file=sys.stderr)
    return settings


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def fail(message: str, status: int = 1) -> int:
    print(f"sealgate: {message}", file=sys.stderr)
    return status


_CODED = re.compile(r"([a-z][a-z0-9_]*): (.+)", re.DOTALL)


def fail_json(args: argparse.Namespace, message: str, status: int = 1, *,
              code: str = "invalid_argument") -> int:
    """``fail``; with ``--json``, stdout also carries ``{"ok": false, "error": {"code",
    "detail"}}``, so a script reading it gets a document whatever happened. ``message`` may
    be an error's ``"code: detail"``; else ``code`` names it."""
    if getattr(args, "json", False):
        coded = _CODED.fullmatch(message)
        code, detail = (coded.group(1), coded.group(2)) if coded else (code, message)
        print(json.dumps({"ok": False, "error": {"code": code, "detail": detail}}, indent=2))
    return fail(message, status)


def missing_state(settings: Settings) -> str | None:
    """Why a command that only reads tenants, keys or accounts has nothing to read: the
    SQLite state database does not exist (a mistyped data directory), which such a command
    must say rather than create an empty one and list nothing. ``None`` when it exists or is
    not a SQLite file."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(settings.tenants_url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or \
            database.startswith("file:") or Path(database).is_file():
        return None
    return f"no state database at {database} (check SEALGATE_DATA_DIR or the config's data_dir)"
