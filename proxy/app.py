"""Application factory: settings in, a wired Litestar app out (no module-level state)."""

from __future__ import annotations

from policy import _native  # noqa: F401  first: rego-cpp before any other C++ library

# isort: split
import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig

from audit import AuditLog, load_or_create_signing_key
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
from policy import BundleWatcher, OPAEngine, PolicyEngine, PolicyUnavailable, RegopyEngine, load_bundle
from proxy.api.audit import audit_handlers
from proxy.api.health import health_handlers
from proxy.api.openai import OpenAIService, openai_handlers
from proxy.api.openapi import JsonDocument, YamlDocument
from proxy.api.refused import refused_handlers
from proxy.attestation import IdentityService, detect_provider, identity_handlers
from proxy.config import BackendSettings, Settings
from proxy.dashboard import DashboardService, dashboard_router
from proxy.enclave import enclave_facts
from proxy.errors import ConfigError, SealedChannelRequired, error_response, exception_handler
from proxy.evidence import record_startup_state
from proxy.gate import PolicyAuditGate
from proxy.gateway import KeyManager, ReplayGuard, build_gateway_handlers, gateway_front, sealed_channel
from proxy.telemetry import Metrics, configure_logging
from proxy.tenants import Tenant, TenantLimits, TenantStore

__all__ = ["Services", "build_backends", "create_app"]

_log = structlog.get_logger("sealgate.app")


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


def build_policy_engine(settings: Settings) -> PolicyEngine:
    bundle = load_bundle(settings.policy_bundle or None)
    timeout = settings.policy_timeout_ms / 1000
    if settings.policy_engine == "opa":
        return OPAEngine(settings.opa_url, bundle, timeout_s=timeout)
    return RegopyEngine(bundle, timeout_s=timeout)


@dataclass(slots=True)
class Services:
    """Everything the handlers depend on; built once per app, completed at start-up."""

    settings: Settings
    router: BackendRouter
    tenants: TenantStore
    policy: PolicyEngine
    ohttp_keys: KeyManager
    replay_guard: ReplayGuard
    identity: IdentityService
    openai: OpenAIService
    log_key: Ed25519PrivateKey
    audit: AuditLog | None = None
    gate: PolicyAuditGate | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    startup_error: Exception | None = None
    """Why start-up failed (the CLI prints it once, with its code, instead of a traceback)."""
    dashboard: DashboardService = field(init=False)

    def __post_init__(self) -> None:
        self.dashboard = DashboardService(self.settings, self.tenants, lambda: self.audit,
                                          self.identity, self.log_key, lambda: self.policy.bundle)

    def dependencies(self) -> dict[str, Provide]:
        def const(value: Any) -> Provide:
            return Provide(lambda: value, use_cache=True, sync_to_thread=False)

        def audit_log() -> AuditLog:
            assert self.audit is not None, "the audit log opens at start-up"
            return self.audit

        async def tenant(request: Request[Any, Any, Any]) -> Tenant:
            # A tenant's API key travels only inside the sealed channel, as on the content
            # endpoints: one read off a plaintext hop (a TLS-terminating ingress) would let
            # anyone seal requests as that tenant.
            if sealed_channel(request.scope) is None and not self.settings.allow_plaintext:
                raise SealedChannelRequired(
                    "requests with a tenant API key are served only through the sealed channel "
                    "(Oblivious HTTP at /.well-known/ohttp-gateway)")
            return await self.tenants.resolve(request.headers.get("authorization"))

        return {
            "settings": const(self.settings),
            "backend_router": const(self.router),
            "tenant_store": const(self.tenants),
            "openai_service": const(self.openai),
            "ohttp_keys": const(self.ohttp_keys),
            "replay_guard": const(self.replay_guard),
            "identity_service": const(self.identity),
            "policy_engine": const(self.policy),
            "audit_log": Provide(audit_log, sync_to_thread=False),
            "tenant": Provide(tenant),
            "dashboard": const(self.dashboard),
        }

    async def start(self) -> None:
        settings = self.settings
        try:  # read now: a folder it cannot use failed every identity check on the dashboard
            await asyncio.to_thread(self.dashboard.collateral)
        except ValueError as exc:
            raise ConfigError(f"collateral_dir: {exc}") from None
        self.audit = await AuditLog.open(
            settings.audit_db_url, self.log_key, settings.log_origin,
            checkpoint_every_n=settings.checkpoint_every_n,
            checkpoint_every_ms=settings.checkpoint_every_ms,
            witness=settings.data_dir / "keys" / "log-signed-checkpoints.json")
        facts = await enclave_facts(self.identity)
        await record_startup_state(settings.data_dir, self.policy.bundle, self.identity)
        self.gate = PolicyAuditGate(
            self.policy, self.audit, facts, mode=settings.deployment_mode, region=settings.region,
            allow_plaintext=settings.allow_plaintext, timeout_s=settings.policy_timeout_ms / 1000)
        self.openai.gate = self.gate
        await self.router.start()
        await self._settle_policy()
        self.tasks.append(asyncio.create_task(self._maintain(), name="identity-maintenance"))
        # What exists now (app, routes, schemas, backends) lives as long as the process: keep
        # it out of the collector's scans, so full collections stay short on the request path.
        gc.collect()
        gc.freeze()

    async def _settle_policy(self) -> None:
        """Install the bundle on a policy server now (engine ``opa``); if that fails, each
        decision tries again, and fails closed until it works."""
        try:
            await self.policy.settle()
        except PolicyUnavailable as exc:
            _log.warning("policy_engine_unavailable", code=exc.code)

    async def _maintain(self) -> None:
        """Policy hot reload and OHTTP key rotation; after either, and when a retired key's
        grace period ends (the key configs change then too), the identity document, the
        enclave facts in records, and the kept evidence state follow."""
        settings = self.settings
        watcher = (BundleWatcher(self.policy, settings.policy_bundle)
                   if settings.policy_bundle and settings.policy_reload_s > 0 else None)
        tick = min(x for x in (settings.policy_reload_s if watcher else 0,
                               settings.ohttp_key_rotation_s, 60) if x > 0)
        loop = asyncio.get_running_loop()
        next_rotation = loop.time() + settings.ohttp_key_rotation_s
        stale, refused = False, None  # identity state to refresh; the last refused bundle's error
        bound = self._identity_inputs()  # what the kept identity state binds
        while True:
            await asyncio.sleep(tick)
            # No single failure may end this loop: it is what keeps keys and policy current.
            try:
                if watcher is not None and await asyncio.to_thread(watcher.poll):
                    stale = True
                    await self._settle_policy()
                    _log.info("policy_reloaded", policy_digest=self.policy.bundle_digest)
                error = watcher.last_error if watcher is not None else None
                if error is not None and str(error) != refused:
                    _log.warning("policy_reload_refused", code=error.code)  # why: `policy test`
                refused = None if error is None else str(error)
                if settings.ohttp_key_rotation_s > 0 and loop.time() >= next_rotation:
                    self.ohttp_keys.rotate()
                    next_rotation = loop.time() + settings.ohttp_key_rotation_s
                    stale = True
                current = self._identity_inputs()
                stale = stale or current != bound
                if stale and self.gate is not None:
                    self.gate.enclave = await enclave_facts(self.identity)
                    await record_startup_state(settings.data_dir, self.policy.bundle,
                                               self.identity)
                    stale, bound = False, current
            except Exception as exc:  # logged; retried on the next tick
                _log.error("maintenance_failed", error_type=type(exc).__name__)

    def _identity_inputs(self) -> tuple[bytes, str]:
        """What the no-nonce identity document binds that can change while running."""
        return self.ohttp_keys.key_configs(), self.policy.bundle_digest

    async def stop(self) -> None:
        """Release everything, each part whatever happened to the ones before (a log that
        cannot publish its final checkpoint still lets the policy engine and the state database
        go)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with _releasing("backends"):
            await self.router.close()
        if self.gate is not None:
            with _releasing("completion_records"):
                await self.gate.drain()
        with _releasing("dashboard"):
            await self.dashboard.aclose()
        if self.audit is not None:
            with _releasing("audit"):
                await self.audit.close()
        with _releasing("policy"):
            await self.policy.aclose()
        with _releasing("tenants"):
            self.tenants.close()


async def _schema_not_found(response: Response[Any]) -> Response[Any]:
    """Any other path under /schema is the framework's HTML "404 Not found" page: answered as
    every other unknown path is, with the JSON error envelope."""
    if response.status_code != 404:
        return response
    return error_response(NotFoundException())


@contextlib.contextmanager
def _releasing(name: str) -> Iterator[None]:
    """One part's release at shutdown: a failure is logged, and shutdown goes on."""
    try:
        yield
    except Exception as exc:
        _log.error("shutdown_step_failed", reason=name, error_type=type(exc).__name__)


def create_app(settings: Settings | None = None, *,
               backends: Mapping[str, Backend] | None = None) -> Litestar:
    """Build the gateway. ``backends`` replaces the configured ones (tests, benchmarks)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    router = BackendRouter(settings.models.values(), backends or build_backends(settings))
    tenants = TenantStore(settings.tenants_url)
    policy = build_policy_engine(settings)
    keys = KeyManager()
    log_key = load_or_create_signing_key(settings.data_dir / "keys" / "log-signing-key.pem")
    identity = IdentityService(
        detect_provider(settings), keys.key_configs,
        log_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        lambda: policy.bundle_digest, settings.release_measurement or "simulated")
    def tenant_limits(name: str) -> TenantLimits:
        """The tenant's limits: its contract's (in the bundle deciding now), else the
        settings'."""
        contract = policy.bundle.contract(name)
        return TenantLimits(
            contract.get("max_concurrent_requests", settings.tenant_max_concurrent),
            contract.get("requests_per_minute", settings.tenant_requests_per_minute),
            contract.get("tokens_per_minute", settings.tenant_tokens_per_minute),
            contract.get("max_tokens", 0), tuple(contract.get("models", ("*",))))

    service = OpenAIService(router, tenants, None, allow_plaintext=settings.allow_plaintext,
                            max_body_bytes=settings.max_body_bytes,
                            metrics=Metrics(frozenset(settings.models)),
                            tenant_limits=tenant_limits)
    services = Services(settings, router, tenants, policy, keys,
                        ReplayGuard(window=settings.replay_window_s,
                                    max_entries=settings.replay_max_entries,
                                    identify=tenants.owner),
                        identity, service, log_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            await services.start()
        except Exception as exc:
            services.startup_error = exc
            raise
        try:
            yield
        finally:
            await services.stop()

    outer_max = settings.max_body_bytes + 64 * 1024  # an encapsulated request's framing and tags
    handlers: list[Any] = [*health_handlers, *openai_handlers, *identity_handlers, *audit_handlers,
                *build_gateway_handlers(max_body_size=outer_max),
                *refused_handlers, dashboard_router]
    app = Litestar(
        route_handlers=handlers,
        dependencies=services.dependencies(),
        exception_handlers={Exception: exception_handler},
        lifespan=[lifespan],
        request_max_body_size=outer_max,
        openapi_config=OpenAPIConfig(title="Sealgate", version="0.1.0", path="/schema",
                                     # The document only: interactive viewers load their
                                     # scripts from a CDN, and nothing is fetched at run time.
                                     render_plugins=[JsonDocument(), YamlDocument()],
                                     openapi_router=Router(
                                         "/schema", route_handlers=[], include_in_schema=False,
                                         after_request=_schema_not_found)),
        state=State({"services": services}),
        debug=False,
        logging_config=None,
    )
    # Sealed requests skip the framework's per-request machinery (proxy/gateway/_front.py).
    app.asgi_handler = gateway_front(app.asgi_handler, app, keys, services.replay_guard,
                                     max_body_size=outer_max)
    return app
