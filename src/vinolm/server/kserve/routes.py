"""KServe v2 REST routes. Thin: parse, run on the ModelService, render.

Errors are raised as VinolmError subclasses; the application maps them to
``{"error": "..."}`` with their 4xx status, as KServe clients expect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request, Response

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.server.kserve import serving
from vinolm.server.kserve.protocol import (
    HEADER_LENGTH,
    ModelMetadata,
    ServerMetadata,
    model_metadata_of,
    parse_body,
    render,
    server_metadata_of,
)
from vinolm.server.kserve.tensors import build_outputs, decode_prompts, requested_outputs, settings_from
from vinolm.server.service import ModelService

router = APIRouter(tags=["KServe v2"])
T = TypeVar("T")


class ClientGone(VinolmError):
    """The client disconnected before its answer was ready (499 in the metrics)."""

    http_status = 499


def _service(request: Request) -> ModelService:
    return request.app.state.service


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    """200 only when the engine can answer, so load balancers wait for the model."""
    is_ready = _service(request).ready()
    return Response(status_code=200 if is_ready else 503)


@router.get("/v2")
async def server_metadata() -> ServerMetadata:
    return server_metadata_of()


@router.get("/v2/models/{name}")
async def model_metadata(name: str, request: Request) -> ModelMetadata:
    return model_metadata_of(_service(request).check_model(name))


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, request: Request) -> Response:
    service = _service(request)
    service.check_model(name)
    return Response(status_code=200 if service.ready() else 503)


@router.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    """N prompts in ``pre_prompt`` answered together; JSON or binary tensors both ways."""
    service = _service(request)
    model = service.check_model(name)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise InvalidRequest("compressed request bodies are not supported; send them uncompressed")
    parsed, tensors = parse_body(await request.body(), request.headers.get(HEADER_LENGTH))
    prompts = decode_prompts(tensors)
    settings = settings_from(parsed.parameters)
    names = requested_outputs([output.name for output in parsed.outputs])
    tickets = serving.submit_all(service, serving.to_requests(prompts, settings), "kserve")
    done = await _unless_disconnected(request, serving.complete(service, tickets))
    content, header_length = render(parsed, model, build_outputs(done.completions, done.token_counts, names))
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(header_length)})


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so the engine) if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone("the client disconnected")
    return task.result()


async def _disconnect(request: Request) -> None:
    """Return once the client has disconnected (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
