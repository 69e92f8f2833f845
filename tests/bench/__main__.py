"""``make bench``: run every ``tests/bench/bench_*.py`` and report the numbers side by side.

Each module exposes ``run(quick: bool = False) -> list[dict]``; a row has ``name``, measured
values (``p50_ms``, ``p99_ms``, ``p50_us``, ``per_s``, …) and ``target``. Human table on stdout,
``--json`` for machine output; ``--only NAME`` runs the modules whose name contains NAME.
"""

from __future__ import annotations

import policy  # noqa: F401  first, as the server does: rego-cpp before any other C++ library

# isort: split
import argparse
import importlib
import json
import pkgutil
import sys
import time
from typing import Any

import tests.bench as package

_VALUE_KEYS = ("p50_ms", "p99_ms", "p50_us", "p99_us", "per_s", "value")


def _fmt(row: dict[str, Any]) -> str:
    values = "  ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                       for k in row if k not in ("name", "target", "ok", "group"))
    verdict = {True: "PASS", False: "MISS", None: ""}[row.get("ok")]
    return f"  {row['name']:<58} {values}   [{row.get('target', '')}] {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--json", action="store_true", help="print JSON rows only")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--only", default="", help="run modules whose name contains this")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_"))
    for name in names:
        if args.only not in name:
            continue
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"tests.bench.{name}")
        group = module.run(quick=args.quick)
        for row in group:
            row.setdefault("group", name.removeprefix("bench_"))
        rows.extend(group)
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f}s", file=sys.stderr,
              flush=True)
        if not args.json:
            print(f"{name.removeprefix('bench_')}:")
            for row in group:
                print(_fmt(row))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
