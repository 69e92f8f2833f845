"""Typed reads of JSON values taken from a bundle.

Everything in a bundle is attacker-controlled until verified, so every value the verifier uses
goes through one of these helpers: each returns the value with the type the caller needs or
raises ``BundleInvalid`` naming what is malformed, never a ``TypeError`` or ``AttributeError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import BundleInvalid

__all__ = ["array", "integer", "load", "obj", "string"]

T = TypeVar("T")


def load(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested input
        raise BundleInvalid(f"{what} is not valid JSON") from exc


def obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleInvalid(f"{what} must be a JSON object")
    return value


def string(value: Any, what: str) -> str:
    """A JSON string that is Unicode text: ``json`` decodes a lone surrogate escape
    (``"\\ud800"``) into a ``str`` that no codec can encode, so it is refused here, once,
    rather than as a ``UnicodeEncodeError`` wherever the value is encoded or printed."""
    if not isinstance(value, str):
        raise BundleInvalid(f"{what} must be a string")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise BundleInvalid(f"{what} holds a lone surrogate, not Unicode text") from exc
    return value


def integer(value: Any, what: str) -> int:
    """A non-negative JSON integer (not a bool, a float or an infinity)."""
    if type(value) is not int or value < 0:
        raise BundleInvalid(f"{what} must be a non-negative integer")
    return value


def array(value: Any, what: str, item: Callable[[Any, str], T]) -> list[T]:
    """A JSON array whose every element passes ``item`` (e.g. ``string``)."""
    if not isinstance(value, list):
        raise BundleInvalid(f"{what} must be a JSON array")
    return [item(v, what) for v in value]
