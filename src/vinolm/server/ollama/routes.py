"""The Ollama endpoints under /api. Thin on purpose: parsing is pydantic's, the work is OllamaServing's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vinolm.server.ollama.protocol import (
    ChatRequest,
    ChatResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelList,
    ModelRequest,
    ShowResponse,
    VersionResponse,
)
from vinolm.server.ollama.serving import NDJSON, OllamaServing

router = APIRouter(prefix="/api", tags=["Ollama"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message names the field)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header"},
}
_NDJSON = {200: {"content": {NDJSON: {}},
                 "description": "NDJSON lines, the last with done: true and the timings; one object with stream: false"}}


def _serving(request: Request) -> OllamaServing:
    return OllamaServing(request.app.state.service)


@router.get("/version", response_model=VersionResponse)
async def version() -> VersionResponse:
    return OllamaServing.version()


@router.get("/tags", response_model=ModelList)
async def tags(request: Request) -> ModelList:
    return _serving(request).tags()


@router.get("/ps", response_model=ModelList)
async def ps(request: Request) -> ModelList:
    return _serving(request).ps()


@router.post("/show", response_model=ShowResponse, responses=_ERRORS)
async def show(body: ModelRequest, request: Request) -> ShowResponse:
    return _serving(request).show(body.model_name)


@router.post("/generate", response_model=GenerateResponse, responses={**_ERRORS, **_NDJSON})
async def generate(body: GenerateRequest, request: Request) -> Response:
    return await _serving(request).generate(body, request)


@router.post("/chat", response_model=ChatResponse, responses={**_ERRORS, **_NDJSON})
async def chat(body: ChatRequest, request: Request) -> Response:
    return await _serving(request).chat(body, request)


@router.post("/embed", responses=_ERRORS)
@router.post("/embeddings", responses=_ERRORS, include_in_schema=False)
async def embed(body: ModelRequest, request: Request) -> Response:
    """Refused with a 400 naming the model: the served model is a chat model."""
    raise _serving(request).embeddings_error(body.model_name)
