"""The OpenAI Responses endpoints. Thin on purpose: parsing is pydantic's, the work is ResponsesServing's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vinolm.server.openai.protocol import ErrorResponse
from vinolm.server.registry import service_for
from vinolm.server.responses.protocol import ResponseObject, ResponsesRequest
from vinolm.server.responses.serving import ResponsesServing

router = APIRouter(prefix="/v1", tags=["OpenAI Responses"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message names the field)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header"},
    503: {"model": ErrorResponse, "description": "The model failed to load (the reason; retried next time)"},
}
_SSE = {200: {"content": {"text/event-stream": {}},
              "description": "JSON, or with stream=true the typed events ending with response.completed"}}


@router.post("/responses", response_model=ResponseObject, responses={**_ERRORS, **_SSE})
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    return await ResponsesServing(await service_for(request, body.model)).create(body, request)


@router.get("/responses/{response_id}", responses={404: {"model": ErrorResponse,
                                                         "description": "Always: vinolm stores no responses"}})
async def get_response(response_id: str) -> Response:
    raise ResponsesServing.not_stored(response_id)
