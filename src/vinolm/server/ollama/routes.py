"""The Ollama endpoints under /api. Thin on purpose: parsing is pydantic's, the work is OllamaServing's."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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
from vinolm.server.ollama.serving import NDJSON, OllamaModels, OllamaServing, served_name
from vinolm.server.registry import registry_of, service_for

router = APIRouter(prefix="/api", tags=["Ollama"])


class JsonBodies:
    """Ollama reads every /api body as JSON whatever its Content-Type, and its documentation's
    examples are ``curl .../api/generate -d '{...}'``, which sends a form's Content-Type: so do
    we, rather than answer those examples with a 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/api/"):
            headers = [(key, value) for key, value in scope["headers"] if key != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)

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


async def _serving(request: Request, body: GenerateRequest | ChatRequest) -> OllamaServing:
    """Generation on the model the request names, loaded on demand (the wait is load_duration),
    kept loaded as long as the request's ``keep_alive`` says."""
    keep = body.keep_alive_seconds()  # a malformed one is a 400 before anything loads
    started = time.perf_counter()
    service = await service_for(request, body.model)
    if keep is not None:
        registry_of(request).keep(body.model, keep)
    return OllamaServing(service, time.perf_counter() - started)


def _unload_asked(request: Request, body: GenerateRequest | ChatRequest) -> bool:
    """Ollama's way to unload a model: no prompt and ``keep_alive`` 0. Unloaded here, never loaded first."""
    if not (body.loads_only and body.keep_alive_seconds() == 0):
        return False
    registry_of(request).unload(body.model)  # 429 while it answers someone
    return True


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
    return _models(request).show(served_name(registry_of(request), body.show_name()))


@router.post("/generate", response_model=GenerateResponse, responses={**_ERRORS, **_NDJSON})
async def generate(body: GenerateRequest, request: Request) -> Response:
    body.model = served_name(registry_of(request), body.model)
    if _unload_asked(request, body):
        return serving.unloaded(body)
    return await (await _serving(request, body)).generate(body, request)


@router.post("/chat", response_model=ChatResponse, responses={**_ERRORS, **_NDJSON})
async def chat(body: ChatRequest, request: Request) -> Response:
    body.model = served_name(registry_of(request), body.model)
    if _unload_asked(request, body):
        return serving.unloaded(body)
    return await (await _serving(request, body)).chat(body, request)


@router.post("/embed", response_model=EmbedResponse, responses=_ERRORS)
async def embed(body: EmbedRequest, request: Request) -> EmbedResponse:
    """Vectors from an embedding model for ``input`` (a text or texts)."""
    return await serving.embed(request, body, legacy=False)  # type: ignore[return-value]


@router.post("/embeddings", response_model=LegacyEmbedResponse, responses=_ERRORS, include_in_schema=False)
async def embeddings(body: EmbedRequest, request: Request) -> LegacyEmbedResponse:
    """Ollama's older endpoint: one ``prompt``, one ``embedding``."""
    return await serving.embed(request, body, legacy=True)  # type: ignore[return-value]
