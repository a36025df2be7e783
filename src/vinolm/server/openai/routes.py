"""The OpenAI endpoints. Thin on purpose: parsing is pydantic's, the work is OpenAIServing's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vinolm.server.openai.embeddings import EmbeddingRequest, EmbeddingResponse, create_embeddings
from vinolm.server.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from vinolm.server.openai.serving import OpenAIServing, model_list
from vinolm.server.registry import registry_of, service_for

router = APIRouter(prefix="/v1", tags=["OpenAI"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message names the field)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header"},
}
_SSE = {200: {"content": {"text/event-stream": {}},
              "description": "JSON, or with stream=true server-sent events ending with data: [DONE]"}}


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return model_list(registry_of(request))


@router.get("/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    registry = registry_of(request)
    card = next((card for card in model_list(registry).data if card.id == model_id), None)
    if card is None:
        raise registry.unknown(model_id)  # 404 naming the served models
    return card


@router.post("/completions", response_model=CompletionResponse, responses={**_ERRORS, **_SSE})
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await OpenAIServing(await service_for(request, body.model)).completions(body, request)


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses={**_ERRORS, **_SSE})
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await OpenAIServing(await service_for(request, body.model)).chat(body, request)


@router.post("/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    return await create_embeddings(await service_for(request, body.model, "embed"), body)
