"""KServe v2 over gRPC: ``serve_grpc`` runs the servicer on its own thread and event loop.

The server gets a loop of its own so that whoever starts it (``vinolm serve`` next to
uvicorn, a test, a notebook) needs no running loop, and so that gRPC traffic never waits
behind HTTP work. Imports stay inside functions: clients import the generated stubs in
``_proto`` without pulling in the server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from vinolm.errors import VinolmError

if TYPE_CHECKING:
    from vinolm.server.service import ModelService


class GrpcServer:
    """A running gRPC server; ``port`` is the bound one (useful with port 0)."""

    def __init__(self, service: ModelService, address: str, api_key: str | None) -> None:
        self._service = service
        self._address = address
        self._api_key = api_key
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="vinolm-grpc", daemon=True)

    def start(self) -> "GrpcServer":
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise VinolmError(f"cannot serve gRPC on {self._address}: {self._error}")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._started.set()
            self._loop.close()

    async def _serve(self) -> None:
        import grpc

        from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
        from vinolm.server.grpc.interceptor import ServerInterceptor
        from vinolm.server.grpc.servicer import InferenceServicer

        limit = self._service.limits.max_request_bytes
        self._server = grpc.aio.server(
            interceptors=[ServerInterceptor(self._api_key)],
            options=[("grpc.max_receive_message_length", limit)],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self._service), self._server)
        try:
            self.port = self._server.add_insecure_port(self._address)
            await self._server.start()
        except RuntimeError as exc:
            self._error = exc
            return
        self._started.set()
        await self._server.wait_for_termination()

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting calls, give running ones ``grace`` seconds, then end the thread."""
        if self._thread.is_alive() and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result()
        self._thread.join()


def serve_grpc(service: ModelService, host: str, port: int, api_key: str | None = None) -> GrpcServer:
    """Serve ``inference.GRPCInferenceService`` for ``service`` on ``host:port`` until ``stop()``."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return GrpcServer(service, address, api_key).start()
