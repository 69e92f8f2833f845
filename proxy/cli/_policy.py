"""``sealgate policy``: evaluate an input document, run the Rego unit tests, print the digest."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from policy import (
    OPAEngine,
    PolicyBundle,
    PolicyEngine,
    PolicyError,
    RegopyEngine,
    load_bundle,
    run_rego_tests,
)
from proxy.cli._common import fail

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="policy bundle: eval, test, digest")
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION")
    sub.required = True

    ev = sub.add_parser("eval", help="decide on one input document and print the decision")
    ev.add_argument("--input", required=True, type=Path, help="input document (JSON file, - for stdin)")
    ev.add_argument("--engine", choices=("regopy", "opa"), default="regopy")
    ev.add_argument("--opa-url", default="http://127.0.0.1:8181", help="OPA server for --engine opa")
    ev.add_argument("--timeout", type=_seconds, default=2.0, help="decision timeout in seconds")
    _bundle_arg(ev)
    ev.set_defaults(func=_eval)

    test = sub.add_parser("test", help="run the bundle's Rego unit tests (*_test.rego)")
    _bundle_arg(test)
    test.set_defaults(func=_test)

    digest = sub.add_parser("digest", help="print the bundle digest")
    _bundle_arg(digest)
    digest.set_defaults(func=_digest)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 3600:  # NaN fails this too
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and below 3600")
    return value


def _bundle_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: built-in)")


def _load(args: argparse.Namespace) -> PolicyBundle | None:
    try:
        return load_bundle(args.bundle)
    except PolicyError as exc:
        fail(str(exc), 2)
        return None


def _read_input(path: Path) -> Any:
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    return json.loads(text)


async def _decide(engine: PolicyEngine, doc: Any) -> dict[str, Any]:
    try:
        return (await engine.decide(doc)).to_dict()
    finally:
        await engine.aclose()


def _eval(args: argparse.Namespace) -> int:
    bundle = _load(args)
    if bundle is None:
        return 2
    try:
        doc = _read_input(args.input)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read input document: {exc}", 2)
    engine: PolicyEngine
    try:
        if args.engine == "opa":
            engine = OPAEngine(args.opa_url, bundle, timeout_s=args.timeout)
        else:
            engine = RegopyEngine(bundle, timeout_s=args.timeout)
        decision = asyncio.run(_decide(engine, doc))
    except PolicyError as exc:
        return fail(str(exc), 3)
    print(json.dumps(decision, indent=2, sort_keys=True))
    return 0 if decision["allow"] else 1


def _test(args: argparse.Namespace) -> int:
    bundle = _load(args)
    if bundle is None:
        return 2
    try:
        results = run_rego_tests(bundle)
    except PolicyError as exc:
        return fail(str(exc), 2)
    for result in results:
        print(f"{result.detail.upper():5} {result.name}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


def _digest(args: argparse.Namespace) -> int:
    bundle = _load(args)
    if bundle is None:
        return 2
    print(bundle.digest)
    return 0
