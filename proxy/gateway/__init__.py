"""The OHTTP gateway inside the Litestar app (RFC 9458 §5, chunked OHTTP for streaming).

Register :data:`gateway_handlers` and provide ``ohttp_keys`` (:class:`KeyManager`) and
``replay_guard`` (:class:`ReplayGuard`) with ``Provide(...)``; :func:`gateway_front` serves
non-chunked sealed requests ahead of the framework, answering as the route would. An opened
request is dispatched to the same app in-process; content routes call :func:`sealed_channel` on
their scope to learn whether they were reached through the gateway (only the gateway can set
that marker).
"""

from __future__ import annotations

from ._channel import SealedChannel, sealed_channel
from ._errors import GatewayError
from ._front import gateway_front
from ._keys import KeyManager
from ._replay import ReplayGuard
from ._routes import DEFAULT_MAX_BODY, GATEWAY_PATH, build_gateway_handlers

gateway_handlers = build_gateway_handlers()

__all__ = [
    "DEFAULT_MAX_BODY",
    "GATEWAY_PATH",
    "GatewayError",
    "KeyManager",
    "ReplayGuard",
    "SealedChannel",
    "build_gateway_handlers",
    "gateway_front",
    "gateway_handlers",
    "sealed_channel",
]
