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


def _discover(bundle: PolicyBundle) -> list[str]:
    names: list[str] = []
    for path, source in sorted(bundle.tests.items()):
        package = _PACKAGE_RE.search(source)
        if package is None:
            raise PolicyBundleError(f"test module {path} has no package")
        for test in dict.fromkeys(_TEST_RE.findall(source)):
            names.append(f"{package.group(1)}.{test}")
    return names


def run_rego_tests(bundle: PolicyBundle) -> tuple[RegoTestResult, ...]:
    """Evaluate every test rule of the bundle; results in file and source order."""
    interpreter = regopy.Interpreter()
    try:
        for name, source in {**bundle.modules, **bundle.tests}.items():
            interpreter.add_module(name, source)
        interpreter.add_data_json(json.dumps(dict(bundle.data)))
    except regopy.RegoError as exc:
        raise PolicyBundleError("the policy bundle or its tests do not parse") from exc
    results = []
    for name in _discover(bundle):
        try:
            output = interpreter.query(f"data.{name}")
        except regopy.RegoError:
            results.append(RegoTestResult(name, False, "error"))
            continue
        if not output.ok():
            results.append(RegoTestResult(name, False, "error"))
            continue
        passed = len(output) == 1 and output[0].expressions == [True]
        results.append(RegoTestResult(name, passed, "pass" if passed else "fail"))
    return tuple(results)
