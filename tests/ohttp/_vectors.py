"""The one loader for the OHTTP/BHTTP vectors used by this test package."""

from __future__ import annotations

from typing import Any

from tests.conftest import load_vector


def ohttp_vector(name: str) -> Any:
    return load_vector("ohttp", name)


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def fields(pairs: list[list[str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.encode(), value.encode()) for name, value in pairs)
