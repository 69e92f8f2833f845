"""Application factory: settings in, a wired Litestar app out (no module-level state)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from inference import (
    Backend,
    BackendRouter,
    LlamaCppBackend,
    LlamaCppConfig,
    OpenAIBackend,
    OpenAIConfig,
    VLLMBackend,
    VLLMConfig,
)
from proxy.api.health import health_handlers
from proxy.api.openai import Gate, OpenAIService, openai_handlers
from proxy.config import BackendSettings, Settings
from proxy.errors import exception_handler
from proxy.telemetry import configure_logging
from proxy.tenants import TenantStore

__all__ = ["Services", "build_backends", "create_app"]


def build_backends(settings: Settings) -> dict[str, Backend]:
    """One backend object per configured backend."""
    return {name: _backend(name, spec) for name, spec in settings.backends.items()}


def _backend(name: str, spec: BackendSettings) -> Backend:
    options = spec.options
    if isinstance(options, LlamaCppConfig):
        return LlamaCppBackend(name, options)
    if isinstance(options, VLLMConfig):
        return VLLMBackend(name, options)
    assert isinstance(options, OpenAIConfig)
    return OpenAIBackend(name, options)


@dataclass(slots=True)
class Services:
    """Everything the handlers depend on; built once per app."""

    settings: Settings
    router: BackendRouter
    tenants: TenantStore
    gate: Gate | None
    openai: OpenAIService

    def dependencies(self) -> dict[str, Provide]:
        def const(value: Any) -> Provide:
            return Provide(lambda: value, use_cache=True, sync_to_thread=False)

        return {
            "settings": const(self.settings),
            "backend_router": const(self.router),
            "tenant_store": const(self.tenants),
            "openai_service": const(self.openai),
        }


def create_app(settings: Settings | None = None, *,
               backends: Mapping[str, Backend] | None = None) -> Litestar:
    """Build the gateway. ``backends`` replaces the configured ones (tests, benchmarks)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    router = BackendRouter(settings.models.values(), backends or build_backends(settings))
    tenants = TenantStore(settings.tenants_url)
    gate: Gate | None = None
    service = OpenAIService(router, tenants, gate, allow_plaintext=settings.allow_plaintext)
    services = Services(settings, router, tenants, gate, service)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await router.start()
        try:
            yield
        finally:
            await router.close()
            tenants.close()

    return Litestar(
        route_handlers=[*health_handlers, *openai_handlers],
        dependencies=services.dependencies(),
        exception_handlers={Exception: exception_handler},
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Sealgate", version="0.1.0", path="/schema",
                                     render_plugins=[SwaggerRenderPlugin()]),
        state=State({"services": services}),
        debug=False,
        logging_config=None,
    )
