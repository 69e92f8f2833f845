"""Fixtures for the policy tests: the shipped bundle, an engine, and the decision cases."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy import PolicyBundle, RegopyEngine, load_bundle

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent.parent / "policy"
SCHEMA_DIR = SHIPPED / "schema"


def load_cases() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = yaml.safe_load((HERE / "cases.yaml").read_text())
    return doc["base"], doc["cases"]


def patched(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with dotted-path overrides applied (a deep copy)."""
    doc = copy.deepcopy(base)
    for dotted, value in patch.items():
        *parents, leaf = dotted.split(".")
        node = doc
        for part in parents:
            node = node[part]
        node[leaf] = value
    return doc


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


@pytest.fixture(scope="session")
def bundle() -> PolicyBundle:
    return load_bundle()


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A copy of the shipped bundle to change."""
    root = tmp_path / "bundle"
    shutil.copytree(SHIPPED / "rego", root / "rego")
    shutil.copytree(SHIPPED / "data", root / "data")
    return root


@pytest.fixture
def base_input() -> dict[str, Any]:
    return load_cases()[0]


@pytest.fixture
def engine(bundle: PolicyBundle) -> Iterator[RegopyEngine]:
    eng = RegopyEngine(bundle, timeout_s=2.0, cache_size=0)
    yield eng
    asyncio.run(eng.aclose())
