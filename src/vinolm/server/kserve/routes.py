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
from vinolm.server.kserve import embeddings, serving
from vinolm.server.kserve.protocol import (
    HEADER_LENGTH,
    VERSION,
    ModelMetadata,
    RepositoryIndex,
    RepositoryModel,
    ServerMetadata,
    check_version,
    parse_body,
    parse_repository_body,
    render,
    server_metadata_of,
)
from vinolm.server.kserve.tensors import (
    INPUT,
    build_outputs,
    decode_prompts,
    requested_outputs,
    settings_from,
)
from vinolm.server.registry import Registry, registry_of

router = APIRouter(tags=["KServe v2"])
T = TypeVar("T")


class ClientGone(VinolmError):
    """The client disconnected before its answer was ready (499 in the metrics)."""

    http_status = 499


def _ready(registry: Registry, name: str | None) -> bool:
    """A model is ready when it is loaded and its server is not draining (no load here)."""
    service = registry.loaded(name)
    return service is not None and service.ready()


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    """200 only when the first model can answer, so load balancers wait for it (and leave
    a draining server); other models load on demand."""
    registry = registry_of(request)
    return Response(status_code=200 if _ready(registry, None) and not registry.draining else 503)


@router.get("/v2")
async def server_metadata() -> ServerMetadata:
    return server_metadata_of()


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> list[dict[str, str]]:
    """KServe's model repository extension: every served name and its model's state
    (``ready: true`` in the body: the loaded ones only)."""
    body = parse_repository_body(await request.body(), RepositoryIndex)
    states = {"loaded": "READY", "loading": "LOADING", "unloaded": "UNAVAILABLE", "failed": "UNAVAILABLE"}
    return [{"name": name, "version": VERSION, "state": states[model["state"]], "reason": model["error"] or ""}
            for model in registry_of(request).states() for name in model["names"]
            if not body.ready or model["state"] == "loaded"]


@router.post("/v2/repository/models/{name}/load")
async def repository_load(name: str, request: Request) -> dict[str, str]:
    """Load a model now rather than on its first request (a 503 with the reason if it fails);
    a load that overrides its configuration or files is a 400, never ignored."""
    body = parse_repository_body(await request.body(), RepositoryModel)
    if body.parameters:
        raise InvalidRequest(f"load parameters are not supported ({', '.join(sorted(body.parameters))}): vinolm "
                             "loads a served model as it was configured", param="parameters")
    await registry_of(request).aservice(name)
    return {}


@router.post("/v2/repository/models/{name}/unload")
async def repository_unload(name: str, request: Request) -> dict[str, str]:
    """Unload a model now (its next request loads it again); one already unloaded stays so,
    one loading or answering is a 429 rather than an answer cut off."""
    body = parse_repository_body(await request.body(), RepositoryModel)
    if set(body.parameters) - {"unload_dependents"}:  # no model here has dependents: that one is a no-op
        raise InvalidRequest("unload parameters other than unload_dependents are not supported", param="parameters")
    registry_of(request).unload(name)
    return {}


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> ModelMetadata:
    """The generation signature, or for an embedding model (loaded or not) its embedding signature."""
    check_version(name, version)
    return embeddings.metadata_for(registry_of(request), name)


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> Response:
    registry = registry_of(request)
    registry.resolve(name)
    check_version(name, version)
    return Response(status_code=200 if _ready(registry, name) else 503)


@router.post("/v2/models/{name}/infer")
@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    """N prompts in ``pre_prompt`` answered together (or, on an embedding model, N texts in
    ``text_input`` embedded); JSON or binary tensors both ways."""
    check_version(name, version)
    service = await registry_of(request).aservice(name)
    model = service.check_model(name)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise InvalidRequest("compressed request bodies are not supported; send them uncompressed")
    parsed, tensors = parse_body(await request.body(), request.headers.get(HEADER_LENGTH))
    if service.embeds:
        vectors = await embeddings.embed(service, tensors, parsed.parameters, [o.name for o in parsed.outputs],
                                         "kserve")
        return _rendered(*render(parsed, model, vectors))  # type: ignore[arg-type]
    prompts = decode_prompts(tensors)
    settings = settings_from(parsed.parameters)
    names = requested_outputs([output.name for output in parsed.outputs])
    tickets = service.submit_all(serving.to_requests(prompts, settings), "kserve", INPUT)
    done = await _unless_disconnected(request, serving.complete(service, tickets))
    return _rendered(*render(parsed, model, build_outputs(done.completions, done.token_counts, names)))


def _rendered(content: bytes, header_length: int | None) -> Response:
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
