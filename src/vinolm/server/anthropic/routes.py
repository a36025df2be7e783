"""The Anthropic Messages endpoints. Thin on purpose: parsing is pydantic's, the work is AnthropicServing's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vinolm.server.anthropic.protocol import ErrorResponse, MessageResponse, MessagesRequest, TokenCount
from vinolm.server.anthropic.serving import AnthropicServing
from vinolm.server.registry import service_for

router = APIRouter(prefix="/v1", tags=["Anthropic"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message names the field)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (x-api-key or Authorization: Bearer)"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header"},
    503: {"model": ErrorResponse, "description": "The model failed to load (the reason; retried next time)"},
}
_SSE = {200: {"content": {"text/event-stream": {}},
              "description": "JSON, or with stream=true Anthropic's server-sent events ending with message_stop"}}


async def _serving(request: Request, model: str) -> AnthropicServing:
    """The serving layer over the service of the model the request names (loaded on demand)."""
    return AnthropicServing(await service_for(request, model))


@router.post("/messages", response_model=MessageResponse, responses={**_ERRORS, **_SSE})
async def messages(body: MessagesRequest, request: Request) -> Response:
    return await (await _serving(request, body.model)).messages(body, request)


@router.post("/messages/count_tokens", response_model=TokenCount, responses=_ERRORS)
async def count_tokens(body: MessagesRequest, request: Request) -> TokenCount:
    return (await _serving(request, body.model)).count_tokens(body)
