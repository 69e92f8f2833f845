"""Liveness and readiness (content-free, always plain)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get

from audit import AuditLog
from inference import BackendRouter
from proxy.api.openai import OpenAIService
from proxy.errors import InvalidRequest

__all__ = ["health_handlers"]


@get("/healthz", summary="Liveness", tags=["health"], sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: the audit log takes records (and, with ?backends=all, "
     "every backend answers)", tags=["health"])
async def readyz(backend_router: BackendRouter, audit_log: AuditLog,
                 backends: str | None = None) -> Response[dict[str, Any]]:
    """Whether this gateway can take requests: its audit log takes records (nothing is
    forwarded without a durable intent record). Each backend's state is reported but does not
    decide by default: backends are shared by every replica, so one that is down (vLLM loading
    for half an hour) would take every replica out of its Service, and with it the identity,
    audit and dashboard routes, while a request for its model is answered 503
    ``backend_unavailable`` anyway. ``?backends=all`` also requires every backend."""
    if backends not in (None, "all"):
        raise InvalidRequest("backends must be 'all' when given", param="backends")
    states = await backend_router.ready()
    audit = audit_log.accepting
    ready = audit and (backends is None or all(states.values()))
    return Response({"status": "ready" if ready else "not_ready", "backends": states,
                     "audit_log": audit}, status_code=200 if ready else 503)


@get("/metrics", summary="Prometheus metrics (content-free counters)", tags=["health"],
     sync_to_thread=False, media_type="text/plain; version=0.0.4")
def metrics(openai_service: OpenAIService) -> str:
    return openai_service.metrics.render() if openai_service.metrics else ""


health_handlers = [healthz, readyz, metrics]
