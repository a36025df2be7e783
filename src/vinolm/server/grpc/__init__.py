"""KServe v2 over gRPC: ``serve_grpc`` runs the servicer on its own thread and event loop.

The server gets a loop of its own so that whoever starts it (``vinolm serve`` next to
uvicorn, a test, a notebook) needs no running loop, and so that gRPC traffic never waits
behind HTTP work. Imports stay inside functions: clients import the generated stubs in
``_proto`` without pulling in the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from vinolm.errors import VinolmError

if TYPE_CHECKING:
    from vinolm.server.registry import Registry
    from vinolm.server.service import ModelService

log = logging.getLogger("vinolm.grpc")


class GrpcServer:
    """A running gRPC server; ``port`` is the bound one (useful with port 0)."""

    def __init__(self, service: ModelService | Registry, address: str, api_key: str | None) -> None:
        self._service = service
        self._address = address
        self._api_key = api_key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._grace = 1.0
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="vinolm-grpc", daemon=True)

    def start(self) -> GrpcServer:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise VinolmError(f"cannot serve gRPC on {self._address}: {self._error}")
        return self

    def _run(self) -> None:
        try:
            # The runner cancels what the stopped server left pending, and waits for it,
            # before it closes the loop.
            with asyncio.Runner() as runner:
                self._loop = runner.get_loop()
                runner.run(self._serve())
        except Exception as exc:  # reported by start() if it happens before serving
            self._error = self._error or exc
            log.exception("the gRPC server failed")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        import grpc

        from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
        from vinolm.server.grpc.interceptor import ServerInterceptor
        from vinolm.server.grpc.servicer import InferenceServicer
        from vinolm.server.registry import Registry

        registry = self._service if isinstance(self._service, Registry) else Registry.single(self._service)
        limit = registry.service(None).limits.max_request_bytes  # the limits every model shares
        server = grpc.aio.server(
            interceptors=[ServerInterceptor(self._api_key)],
            # No SO_REUSEPORT: a second server on a busy port must fail, not share its traffic.
            options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(registry), server)
        try:
            self.port = server.add_insecure_port(self._address)
            await server.start()
        except RuntimeError as exc:
            self._error = exc
            return
        self._stopping = asyncio.Event()
        self._started.set()
        await self._stopping.wait()
        await server.stop(self._grace)  # on this loop, so it completes before the loop closes
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:  # calls cancelled by the stop are still unwinding
            await asyncio.wait(others, timeout=self._grace)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting calls, give running ones ``grace`` seconds, then end the thread."""
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._grace = grace
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()


def serve_grpc(service: ModelService | Registry, host: str, port: int, api_key: str | None = None) -> GrpcServer:
    """Serve ``inference.GRPCInferenceService`` for ``service`` (one model or a registry of
    them) on ``host:port`` until ``stop()``."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return GrpcServer(service, address, api_key).start()
