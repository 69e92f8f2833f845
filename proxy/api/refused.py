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


# The methods the served paths do not serve (``GET /v1/chat/completions`` lists stored
# completions, SG-TRAIN-005) are decided and recorded too, not answered 405 by the router.
_SERVED_POST = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@route(_SERVED_POST, http_method=["GET", "PUT", "PATCH", "DELETE"], status_code=200,
       include_in_schema=False)
async def refused_method(request: Request[Any, Any, Any],
                         openai_service: OpenAIService) -> Response[Any]:
    return await openai_service.refuse(request)


@route(["/v1/models", "/v1/models/{model_id:path}"], http_method=["POST", "PUT", "PATCH", "DELETE"],
       status_code=200, include_in_schema=False)
async def refused_models_method(request: Request[Any, Any, Any], openai_service: OpenAIService,
                                model_id: str | None = None) -> Response[Any]:
    return await openai_service.refuse(request)


refused_handlers = [refused, refused_method, refused_models_method]
