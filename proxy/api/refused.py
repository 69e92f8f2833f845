"""Every other ``/v1`` path (fine-tuning, files, batches, evals, assistants, threads, stored
completions…): authenticated, decided by policy, recorded when denied, never served."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, route

from proxy.api.openai.serving import OpenAIService

__all__ = ["refused_handlers"]


@route("/v1/{path:path}", http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
       summary="Endpoints not served (policy decides and records)", tags=["openai"],
       include_in_schema=False)
async def refused(request: Request[Any, Any, Any], openai_service: OpenAIService,
                  path: str) -> Response[Any]:
    return await openai_service.refuse(request)


refused_handlers = [refused]
