"""Liveness and readiness (content-free, always plain)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get

from audit import AuditLog
from inference import BackendRouter
from proxy.api.openai import OpenAIService

__all__ = ["health_handlers"]


@get("/healthz", summary="Liveness", tags=["health"], sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: every backend answers and the audit log takes records",
     tags=["health"])
async def readyz(backend_router: BackendRouter, audit_log: AuditLog) -> Response[dict[str, Any]]:
    backends = await backend_router.ready()
    audit = audit_log.accepting
    ready = all(backends.values()) and audit
    return Response({"status": "ready" if ready else "not_ready", "backends": backends,
                     "audit_log": audit}, status_code=200 if ready else 503)


@get("/metrics", summary="Prometheus metrics (content-free counters)", tags=["health"],
     sync_to_thread=False, media_type="text/plain; version=0.0.4")
def metrics(openai_service: OpenAIService) -> str:
    return openai_service.metrics.render() if openai_service.metrics else ""


health_handlers = [healthz, readyz, metrics]
