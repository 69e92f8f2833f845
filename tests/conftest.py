"""Shared test plumbing: vector loading and the missing-component rule.

A test that needs a system component that is absent calls ``need(...)``; it skips with the
reason, or fails when ``SEALGATE_REQUIRE_ALL=1`` (CI), so nothing is silently left out there.
"""

from __future__ import annotations

import policy  # noqa: F401  first: rego-cpp before any other C++ library (policy/_native.py)

# isort: split
import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The vLLM suite runs under `make test-vllm` (its own interpreter and model), not `make test`.
collect_ignore = [] if os.environ.get("SEALGATE_VLLM_PYTHON") else ["vllm"]

VECTORS = Path(os.environ.get("SEALGATE_VECTORS", ROOT.parent / "shared" / "vectors")).resolve()


def need(condition: bool, reason: str) -> None:
    """Skip (or, under SEALGATE_REQUIRE_ALL=1, fail) when a required component is missing."""
    if condition:
        return
    if os.environ.get("SEALGATE_REQUIRE_ALL") == "1":
        pytest.fail(f"required component missing: {reason}", pytrace=False)
    pytest.skip(reason)


def vector_path(*parts: str) -> Path:
    """Path of a file under the shared vectors, skipping (or failing) when it is absent."""
    path = VECTORS.joinpath(*parts)
    need(path.exists(), f"test vector {path} not found (set SEALGATE_VECTORS)")
    return path


def load_vector(*parts: str) -> Any:
    """Load a JSON (or gzipped JSON) test vector file."""
    path = vector_path(*parts)
    if path.suffix == ".gz":
        import gzip

        return json.loads(gzip.decompress(path.read_bytes()))
    return json.loads(path.read_text())


@pytest.fixture
def vectors() -> Path:
    need(VECTORS.is_dir(), f"test vectors not found at {VECTORS} (set SEALGATE_VECTORS)")
    return VECTORS


@pytest.fixture(autouse=True)
def _fresh_logging() -> Any:
    """Each test starts with structlog's defaults: a test that configured logging to its
    captured output (closed when it ends) must not leave later tests' logs writing there."""
    import structlog

    yield
    structlog.reset_defaults()

