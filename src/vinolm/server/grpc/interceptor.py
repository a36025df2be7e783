"""The one place gRPC calls are authorized and exceptions become status codes.

With an API key, every method requires metadata ``authorization: Bearer KEY`` or
``x-api-key: KEY`` (UNAUTHENTICATED otherwise). VinolmError maps by its HTTP status:
400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 429 -> RESOURCE_EXHAUSTED, anything else ->
INTERNAL. Unexpected exceptions are logged here with their traceback and reach the
client only as "internal error".
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from vinolm.errors import VinolmError

log = logging.getLogger("vinolm.grpc")

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def status_of(exc: VinolmError) -> grpc.StatusCode:
    return _CODES.get(exc.http_status, grpc.StatusCode.INTERNAL)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails
                                ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        if self.api_key and not self._authorized(details.invocation_metadata or ()):
            return _wrap(handler, _deny)
        return _wrap(handler, _guard)

    def _authorized(self, metadata: Sequence[tuple[str, Any]]) -> bool:
        assert self.api_key is not None
        for key, value in metadata:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if key == "authorization":
                scheme, _, token = text.partition(" ")
                text = token.strip() if scheme.lower() == "bearer" else ""
            elif key != "x-api-key":
                continue
            if hmac.compare_digest(text.encode(), self.api_key.encode()):
                return True
        return False


Behavior = Callable[..., Any]


def _wrap(handler: grpc.RpcMethodHandler, decorate: Callable[[Behavior, bool], Behavior]) -> grpc.RpcMethodHandler:
    """The same handler with its one behavior replaced by ``decorate(behavior, streams)``."""
    for field in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, field)
        if behavior is not None:
            return handler._replace(**{field: decorate(behavior, handler.response_streaming)})  # type: ignore[attr-defined]
    return handler


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    if isinstance(exc, VinolmError):
        await context.abort(status_of(exc), exc.message)
    log.error("unexpected error in a gRPC call", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _guard(behavior: Behavior, streams: bool) -> Behavior:
    if streams:
        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a gRPC status
                await _abort_for(exc, context)
        return guarded_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a gRPC status
            await _abort_for(exc, context)
    return guarded


def _deny(behavior: Behavior, streams: bool) -> Behavior:
    message = "missing or wrong API key: send metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'"
    if streams:
        async def denied_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover - makes this an async generator, as the handler kind requires
        return denied_stream

    async def denied(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
    return denied
