"""Thin route handlers for the OpenAI API; the logic lives in :mod:`.serving`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post

from proxy.api.openai.serving import OpenAIService

__all__ = ["openai_handlers"]

_DOC = "Content endpoint: sealed channel (OHTTP) and a tenant API key required."


@get("/v1/models", summary="List models", description=_DOC, tags=["openai"])
async def list_models(request: Request[Any, Any, Any],
                      openai_service: OpenAIService) -> Response[dict[str, Any]]:
    return await openai_service.models(request)


# A path parameter: model names may hold "/" (organisation/model), as served ones do.
@get("/v1/models/{model_id:path}", summary="Retrieve model", description=_DOC, tags=["openai"])
async def retrieve_model(request: Request[Any, Any, Any], openai_service: OpenAIService,
                         model_id: Path) -> Response[dict[str, Any]]:
    return await openai_service.model(request, str(model_id).lstrip("/"))


@post("/v1/chat/completions", summary="Create chat completion", description=_DOC, tags=["openai"],
      status_code=200)
async def chat_completions(request: Request[Any, Any, Any], openai_service: OpenAIService) -> Response[Any]:
    return await openai_service.generate("chat", request)


@post("/v1/completions", summary="Create completion", description=_DOC, tags=["openai"],
      status_code=200)
async def completions(request: Request[Any, Any, Any], openai_service: OpenAIService) -> Response[Any]:
    return await openai_service.generate("completions", request)


@post("/v1/embeddings", summary="Create embeddings", description=_DOC, tags=["openai"],
      status_code=200)
async def embeddings(request: Request[Any, Any, Any], openai_service: OpenAIService) -> Response[Any]:
    return await openai_service.embeddings(request)


openai_handlers = [list_models, retrieve_model, chat_completions, completions, embeddings]
