"""Sealgate's gateway: the Litestar app, the OHTTP gateway, attestation, the client SDK and CLI.

Names load lazily so that a client importing ``proxy.client`` does not pull in the server.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AsyncSealedTransport", "SealedTransport", "Settings", "create_app"]

_WHERE = {
    "Settings": "proxy.config",
    "create_app": "proxy.app",
    "SealedTransport": "proxy.client",
    "AsyncSealedTransport": "proxy.client",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'proxy' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
