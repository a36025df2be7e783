"""KServe v2 gRPC behind Ray Serve's gRPC proxy: the replica's methods of the servicer's names.

Ray's gRPC proxy registers the generated ``add_GRPCInferenceServiceServicer_to_server`` and,
for each call, runs the replica method of the same name (a bidirectional stream gets an
async iterator of requests and answers from an async generator). Those methods hand the
call to vinolm's own ``InferenceServicer`` unchanged; what the interceptor does in plain
``vinolm serve`` (the API key, VinolmError -> status code) is done here on Ray's context,
since the proxy takes no interceptors.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from vinolm.errors import VinolmError

SERVICER_FUNCTION = "vinolm.deploy.ray_grpc.add_servicer_to_server"
UNARY_METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
DENIED = "missing or wrong API key: send metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'"


def _alias_messages() -> None:
    """Ray pickles each request between proxy and replica by its class's module, which protoc
    names after the .proto file (``grpc_predict_v2_pb2``, not vinolm's package path): make that
    name importable in both processes (this module is imported in each)."""
    from vinolm.server.grpc._proto import grpc_predict_v2_pb2

    sys.modules.setdefault("grpc_predict_v2_pb2", grpc_predict_v2_pb2)


def add_servicer_to_server(servicer: Any, server: Any) -> None:
    """What Ray's gRPC proxy registers: the generated function, after the alias above."""
    from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc

    _alias_messages()
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


class _Denied(Exception):
    """No or the wrong API key (UNAUTHENTICATED)."""


class RayCallContext:
    """What the servicer asks of a gRPC context, over Ray's ``RayServegRPCContext``.

    The servicer registers a done callback to cancel its generations when the RPC ends; under
    Ray a client that goes away cancels the replica's task (and closes its generator), which
    already cancels them, so the callback has nothing left to do.
    """

    def __init__(self, ray_context: Any) -> None:
        self.ray_context = ray_context

    def add_done_callback(self, callback: Callable[[object], None]) -> None:
        del callback  # the task's cancellation does this job under Ray

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self.ray_context.invocation_metadata())


class GrpcMethods:
    """Mixed into the Ray replica: one method per RPC, each delegating to ``self.servicer``.

    The replica sets ``self.servicer`` (an ``InferenceServicer`` over its registry) and
    ``self.api_key``.
    """

    servicer: Any
    api_key: str | None

    def _serve_grpc(self, registry: Any, api_key: str | None) -> None:
        from vinolm.server.grpc.servicer import InferenceServicer

        _alias_messages()
        self.servicer = InferenceServicer(registry)
        self.api_key = api_key

    def _fail(self, grpc_context: Any, exc: Exception) -> None:
        """Set the status Ray sends when the method raises (VinolmError by its HTTP status)."""
        import grpc

        from vinolm.server.grpc.interceptor import status_of

        if isinstance(exc, _Denied):
            grpc_context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            grpc_context.set_details(DENIED)
        elif isinstance(exc, VinolmError):
            grpc_context.set_code(status_of(exc))
            grpc_context.set_details(exc.message)
        else:
            grpc_context.set_code(grpc.StatusCode.INTERNAL)
            grpc_context.set_details("internal error")

    def _authorize(self, grpc_context: Any) -> None:
        from vinolm.server.grpc.interceptor import ServerInterceptor

        if self.api_key and not ServerInterceptor(self.api_key)._authorized(grpc_context.invocation_metadata()):
            raise _Denied

    async def _unary(self, name: str, request: Any, grpc_context: Any) -> Any:
        try:
            self._authorize(grpc_context)
            return await getattr(self.servicer, name)(request, RayCallContext(grpc_context))
        except Exception as exc:
            self._fail(grpc_context, exc)
            raise

    async def ModelStreamInfer(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        try:
            self._authorize(grpc_context)
            async for response in self.servicer.ModelStreamInfer(request_stream, RayCallContext(grpc_context)):
                yield response
        except Exception as exc:
            self._fail(grpc_context, exc)
            raise


def _unary_method(name: str) -> Callable[..., Any]:
    async def method(self: GrpcMethods, request: Any, grpc_context: Any = None) -> Any:
        return await self._unary(name, request, grpc_context)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{name}`` through Ray's gRPC proxy."
    return method


for _name in UNARY_METHODS:
    setattr(GrpcMethods, _name, _unary_method(_name))
