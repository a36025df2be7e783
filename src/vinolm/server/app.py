"""The HTTP application: routers, error translation, API key, size limit, access log, metrics.

Every protocol answers errors in its own shape, decided here once by path: ``/v1/...``
gets OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (the Responses API's too),
``/v1/messages`` Anthropic's ``{"type": "error", "error": {"type", "message"}}``, ``/v2/...``
KServe's and ``/api/...`` Ollama's ``{"error": "..."}``. Bad input of any kind (invalid JSON or UTF-8, wrong types,
missing fields) is a 400 naming the problem, never a 422 or a traceback.

With an API key, every route under ``/v1``, ``/v2`` and ``/api`` requires it, the KServe health
routes included (the issue asks for *every* API route, and a probe can send a header).
``/health`` (a plain liveness/readiness check), ``/metrics``, ``/docs`` and ``/ui`` stay
open: they expose no model output.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import importlib.util
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vinolm.errors import Overloaded, Unavailable, UnknownModel, VinolmError
from vinolm.server.anthropic.protocol import error_body as anthropic_error_body
from vinolm.server.anthropic.routes import router as anthropic_router
from vinolm.server.metrics import CONTENT_TYPE, ServerMetrics
from vinolm.server.ollama.routes import JsonBodies
from vinolm.server.ollama.routes import router as ollama_router
from vinolm.server.openai.routes import router as openai_router
from vinolm.server.registry import Registry
from vinolm.server.responses.routes import router as responses_router
from vinolm.server.service import ModelService, submitted_here, watch_submissions

log = logging.getLogger("vinolm.server")
access_log = logging.getLogger("vinolm.access")
RETRY_AFTER_SECONDS = 1
_API_PREFIXES = ("/v1", "/v2", "/api/")
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def build_app(models: ModelService | Registry, api_key: str | None = None, *, ui: bool = True) -> FastAPI:
    """The FastAPI app serving ``models`` (one loaded service, or a registry that loads them
    on demand) over every API, plus the UI (a picker over its generating models)."""
    registry = models if isinstance(models, Registry) else Registry.single(models)
    service = registry.service(None)
    if service.metrics is None:
        service.metrics = ServerMetrics()
    registry.listeners.append(service.metrics.model_event)
    for model in registry.states():  # loaded before the app existed: counted now
        if model["state"] == "loaded":
            service.metrics.model_event(model["name"], "loaded")
    app = FastAPI(title="vinolm", summary="OpenAI and KServe v2 APIs over one OpenVINO engine",
                  version="0.1.0", lifespan=_lifespan, strict_content_type=False)
    app.state.registry = registry
    app.state.service = service
    _add_error_handlers(app)
    app.include_router(openai_router)
    for router in (responses_router, anthropic_router, ollama_router):
        app.include_router(router)
    kserve_router = optional("vinolm.server.kserve.routes", "router")
    if kserve_router is not None:
        app.include_router(kserve_router)
    app.state.kserve = kserve_router is not None
    _add_plain_routes(app, service)
    mount_ui = optional("vinolm.ui", "mount_ui") if ui else None
    if mount_ui is not None:
        mount_ui(app, registry)  # the one place the web UI joins the server
    app.state.ui = mount_ui is not None
    # Middleware runs outermost last-added: access log, API key, size limit, Ollama's bodies.
    app.add_middleware(JsonBodies)
    app.add_middleware(BodyLimitMiddleware, max_bytes=service.limits.max_request_bytes, metrics=service.metrics)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key, metrics=service.metrics)
    app.add_middleware(AccessLogMiddleware)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    registry: Registry = app.state.registry
    log.info("serving %s", ", ".join(registry.names))
    sweeper = asyncio.create_task(_sweep(registry))
    yield
    sweeper.cancel()
    if registry.in_flight:
        log.info("shutting down with %d requests in flight; they are cancelled", registry.in_flight)


async def _sweep(registry: Registry, every_s: float = 1.0) -> None:
    """Unload models whose keep-alive ran out (the engine is closed off the event loop)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(registry.sweep)


def optional(module: str, attr: str) -> Any | None:
    """``module.attr`` if that module exists (built by another part of the project), else None."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(module), attr, None)


def _add_plain_routes(app: FastAPI, service: ModelService) -> None:
    metrics = service.metrics
    assert metrics is not None

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/health", tags=["server"])
    async def health() -> JSONResponse:
        """200 once the first model is loaded and the server takes requests; never needs the API
        key. ``models``: every served name with its state (the others load on demand)."""
        ready = service.ready()
        models = {name: model["state"] for model in app.state.registry.states() for name in model["names"]}
        return JSONResponse({"status": "ok" if ready else "loading", "models": models},
                            status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui" if app.state.ui else "/docs")


# -- error bodies -----------------------------------------------------------------------------------
def protocol_of(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/responses"):
        return "responses"
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1"):
        return "openai"
    if path.startswith("/v2"):
        return "kserve"
    return "http"


def error_body(path: str, message: str, kind: str, param: str | None = None,
               code: str | None = None, status: int = 400) -> dict[str, Any]:
    """KServe's and Ollama's flat body, Anthropic's under /v1/messages, OpenAI's everywhere else."""
    protocol = protocol_of(path)
    if protocol in ("kserve", "ollama"):
        return {"error": message}
    if protocol == "anthropic":
        return anthropic_error_body(status, message)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _kind_of(status: int) -> str:
    return {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")


def _error_response(request: Request, status: int, message: str, kind: str | None = None,
                    param: str | None = None, code: str | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    service = getattr(request.app.state, "service", None)  # absent in mounted sub-apps (the UI)
    _count_rejection(request.scope, status, service.metrics if service else None, accounted=submitted_here())
    body = error_body(request.url.path, message, kind or _kind_of(status), param, code, status)
    return JSONResponse(body, status_code=status, headers=headers)


def _count_rejection(scope: Scope, status: int, metrics: ServerMetrics | None, accounted: bool = False) -> None:
    """Count an inference request (a POST to the API) refused before ModelService saw it."""
    if metrics is None or accounted or scope.get("method") != "POST":
        return
    path = scope.get("path", "")
    if path.startswith(_API_PREFIXES):
        metrics.request_done(protocol_of(path), str(status))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VinolmError)
    async def vinolm_error(request: Request, exc: VinolmError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if isinstance(exc, (Overloaded, Unavailable)) else None
        code = exc.code or {UnknownModel: "model_not_found", Overloaded: "rate_limit_exceeded"}.get(type(exc))
        if exc.http_status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _error_response(request, exc.http_status, exc.message, exc.kind, exc.param, code, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message, param = describe_validation_errors(errors)
        code = "unsupported_parameter" if errors and errors[0].get("type") == "extra_forbidden" else None
        return _error_response(request, 400, message, "invalid_request_error", param, code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        status = exc.status_code
        if isinstance(exc.__cause__, UnicodeDecodeError):
            status, message = 400, f"the request body is not valid UTF-8: {exc.__cause__.reason} at byte {exc.__cause__.start}"
        elif status == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        return _error_response(request, status, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error_response(request, 500, f"internal server error ({type(exc).__name__}); see the server log",
                               "server_error")


def describe_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """pydantic's error list -> one message naming the fields, and the first field as ``param``."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "JSON decode error")
        position = first["loc"][1] if len(first.get("loc", ())) > 1 else "?"
        return f"the request body is not valid JSON: {detail} at position {position}", None
    parts, params = [], []
    for error in errors[:4]:
        param = _param_of(error.get("loc", ()))
        if param is None:
            return _body_problem(error), None
        params.append(param)
        if error.get("type") == "extra_forbidden":
            parts.append(f"{param} is not supported by vinolm")
        else:
            parts.append(f"{param}: {error.get('msg', 'invalid')}{_got(error)}")
    return "; ".join(dict.fromkeys(parts)), params[0]


def _param_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    names = [str(p) for p in loc if p != "body" and not _is_type_tag(p)]
    return ".".join(names) or None


def _is_type_tag(part: Any) -> bool:
    """Union members and validators in pydantic's ``loc`` ('str', 'list[str]', 'ContentPart')."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part[:1].isupper())


def _body_problem(error: dict[str, Any]) -> str:
    if error.get("type") == "missing":
        return "the request body is missing: send a JSON object"
    return "the request body must be a JSON object (Content-Type: application/json)"


def _got(error: dict[str, Any]) -> str:
    value = error.get("input")
    if error.get("type") == "missing" or isinstance(value, (dict, list)) or value is None:
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 40 else text[:37] + '...'})"


# -- middleware (plain ASGI: nothing buffers a stream) -------------------------------------------
async def _send_json(scope: Scope, send: Send, status: int, body: dict[str, Any],
                     headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    """``Authorization: Bearer KEY`` (what OpenAI SDKs send) or ``X-API-Key: KEY`` (Anthropic's
    header) on /v1, /v2 and /api."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: ServerMetrics | None = None) -> None:
        self.app = app
        self._key = api_key.encode()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_API_PREFIXES) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        _count_rejection(scope, 401, self.metrics)
        message = "missing or wrong API key: send 'Authorization: Bearer <key>' (or 'X-API-Key: <key>')"
        await _send_json(scope, send, 401, error_body(scope["path"], message, "authentication_error",
                                                       code="invalid_api_key", status=401),
                         {"WWW-Authenticate": "Bearer"})

    def _allowed(self, scope: Scope) -> bool:
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        candidate = token.strip() if scheme.lower() == "bearer" else (_header(scope, b"x-api-key") or "")
        return hmac.compare_digest(candidate.encode(), self._key)


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once by Content-Length, or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServerMetrics | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch_submissions()  # per request: lets the error handlers count only what the service did not
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            _count_rejection(scope, status, self.metrics)
            message = (f"the request body is over this server's limit of {self.max_bytes} bytes"
                       if status == 413 else f"invalid Content-Length {declared!r}")
            await _send_json(scope, send, status, error_body(scope["path"], message, "invalid_request_error",
                                                             status=status))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"the request body is over this server's limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


class AccessLogMiddleware:
    """One JSON line per request on the ``vinolm.access`` logger, written when the response ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        except BaseException:
            status = status or 500
            raise
        finally:
            status = status or 499  # no response at all: the client left first
            client = scope.get("client")
            access_log.info(json.dumps({
                "method": scope.get("method"), "path": scope.get("path"), "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "protocol": protocol_of(scope.get("path", "")), "client": client[0] if client else None,
            }))
