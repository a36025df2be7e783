"""The Ollama endpoints under /api. Thin on purpose: parsing is pydantic's, the work is OllamaServing's."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vinolm.server.ollama import serving
from vinolm.server.ollama.protocol import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    LegacyEmbedResponse,
    ModelList,
    ModelRequest,
    ShowResponse,
    VersionResponse,
)
from vinolm.server.ollama.serving import NDJSON, OllamaModels, OllamaServing
from vinolm.server.registry import registry_of, service_for

router = APIRouter(prefix="/api", tags=["Ollama"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message names the field)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header"},
    503: {"model": ErrorResponse, "description": "The model failed to load (the reason; retried next time)"},
}
_NDJSON = {200: {"content": {NDJSON: {}},
                 "description": "NDJSON lines, the last with done: true and the timings; one object with stream: false"}}


def _models(request: Request) -> OllamaModels:
    return OllamaModels(registry_of(request))


async def _serving(request: Request, model: str) -> OllamaServing:
    """Generation on the model the request names, loaded on demand (the wait is load_duration)."""
    started = time.perf_counter()
    service = await service_for(request, model)
    return OllamaServing(service, time.perf_counter() - started)


@router.get("/version", response_model=VersionResponse)
async def version() -> VersionResponse:
    return OllamaModels.version()


@router.get("/tags", response_model=ModelList)
async def tags(request: Request) -> ModelList:
    return _models(request).tags()


@router.get("/ps", response_model=ModelList)
async def ps(request: Request) -> ModelList:
    return _models(request).ps()


@router.post("/show", response_model=ShowResponse, responses=_ERRORS)
async def show(body: ModelRequest, request: Request) -> ShowResponse:
    return _models(request).show(body.model_name)


@router.post("/generate", response_model=GenerateResponse, responses={**_ERRORS, **_NDJSON})
async def generate(body: GenerateRequest, request: Request) -> Response:
    return await (await _serving(request, body.model)).generate(body, request)


@router.post("/chat", response_model=ChatResponse, responses={**_ERRORS, **_NDJSON})
async def chat(body: ChatRequest, request: Request) -> Response:
    return await (await _serving(request, body.model)).chat(body, request)


@router.post("/embed", response_model=EmbedResponse, responses=_ERRORS)
async def embed(body: EmbedRequest, request: Request) -> EmbedResponse:
    """Vectors from an embedding model for ``input`` (a text or texts)."""
    return await serving.embed(request, body, legacy=False)  # type: ignore[return-value]


@router.post("/embeddings", response_model=LegacyEmbedResponse, responses=_ERRORS, include_in_schema=False)
async def embeddings(body: EmbedRequest, request: Request) -> LegacyEmbedResponse:
    """Ollama's older endpoint: one ``prompt``, one ``embedding``."""
    return await serving.embed(request, body, legacy=True)  # type: ignore[return-value]
