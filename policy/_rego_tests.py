"""Run a bundle's Rego unit tests (``*_test.rego``, rules named ``test_*``) with regopy.

A test passes when its rule evaluates to ``true``, as with ``opa test``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import regopy

from ._bundle import PolicyBundle
from ._errors import PolicyBundleError

__all__ = ["RegoTestResult", "run_rego_tests"]

_PACKAGE_RE = re.compile(r"^package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
_TEST_RE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RegoTestResult:
    """Outcome of one Rego unit test."""

    name: str
    """``<package>.<rule>``."""
    passed: bool
    detail: str
    """``pass``, ``fail`` (false or undefined) or ``error`` (the query failed)."""


def _discover(bundle: PolicyBundle) -> dict[str, list[str]]:
    """Test package → test rule names, in file and source order."""
    found: dict[str, list[str]] = {}
    for path, source in sorted(bundle.tests.items()):
        package = _PACKAGE_RE.search(source)
        if package is None:
            raise PolicyBundleError(f"test module {path} has no package")
        names = found.setdefault(package.group(1), [])
        names.extend(t for t in dict.fromkeys(_TEST_RE.findall(source)) if t not in names)
    return found


def _query(interpreter: regopy.Interpreter, ref: str) -> object:
    """The value of ``ref``; ``None`` when undefined; raises ``RegoError`` when it fails."""
    output = interpreter.query(ref)
    # A failed query's string form must not be read (rego-cpp 1.5 crashes on it).
    if not output.ok():
        raise regopy.RegoError(f"query {ref} failed")
    return output[0].expressions[0] if len(output) == 1 and output[0].expressions else None


def _run_package(interpreter: regopy.Interpreter, package: str, names: list[str]) -> list[RegoTestResult]:
    # One query evaluates the whole package (one compilation); a failing test is undefined and
    # so absent. Only when that query fails is each test run alone, to say which one errs.
    try:
        values = _query(interpreter, f"data.{package}")
    except regopy.RegoError:
        values = None
    results = []
    for name in names:
        if isinstance(values, dict):
            passed, detail = values.get(name) is True, ""
        else:
            try:
                passed, detail = _query(interpreter, f"data.{package}.{name}") is True, ""
            except regopy.RegoError:
                passed, detail = False, "error"
        detail = detail or ("pass" if passed else "fail")
        results.append(RegoTestResult(f"{package}.{name}", passed, detail))
    return results


def run_rego_tests(bundle: PolicyBundle) -> tuple[RegoTestResult, ...]:
    """Evaluate every test rule of the bundle; results in file and source order."""
    interpreter = regopy.Interpreter()
    try:
        for name, source in {**bundle.modules, **bundle.tests}.items():
            interpreter.add_module(name, source)
        interpreter.add_data_json(json.dumps(dict(bundle.data)))
    except regopy.RegoError as exc:
        raise PolicyBundleError("the policy bundle or its tests do not parse") from exc
    results: list[RegoTestResult] = []
    for package, names in _discover(bundle).items():
        results.extend(_run_package(interpreter, package, names))
    return tuple(results)
