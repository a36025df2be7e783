"""The one object every protocol (OpenAI, KServe REST, gRPC, web UI) talks to.

It owns the engine, decides admission (a bounded queue answered with ``Overloaded`` at
once rather than a time-out), tracks running requests, and records metrics. Protocol
code never imports OpenVINO: it builds a :class:`~vinolm.types.Request`, calls
:meth:`ModelService.submit`, and iterates the returned generation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vinolm.errors import InvalidRequest, Overloaded, UnknownModel
from vinolm.types import Chunk, Metrics, Request

if TYPE_CHECKING:
    from vinolm.engines.base import Engine, Generation
    from vinolm.server.metrics import ServerMetrics


@dataclass
class Limits:
    max_concurrency: int = 8
    max_queue: int = 64
    max_tokens_limit: int = 4096
    max_request_bytes: int = 1 << 20


@dataclass
class Ticket:
    """A submitted request: the generation plus what the metrics need at the end."""

    generation: Generation
    protocol: str
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None


class ModelService:
    def __init__(
        self,
        engine: Engine,
        served_names: list[str] | None = None,
        limits: Limits | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.served_names = served_names or [engine.model.name]
        self.limits = limits or Limits()
        self.metrics = metrics
        self._lock = threading.Lock()
        self._in_flight = 0
        self.created = int(time.time())

    @property
    def model_name(self) -> str:
        return self.served_names[0]

    def check_model(self, name: str | None) -> str:
        """The served name to answer with; unknown names are a 404, not a silent default."""
        if name is None or name in self.served_names:
            return self.model_name if name is None else name
        raise UnknownModel(f"model {name!r} is not served here; available: {', '.join(self.served_names)}",
                           param="model")

    def ready(self) -> bool:
        return self.engine is not None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stats(self) -> dict[str, int]:
        running = min(self._in_flight, self.limits.max_concurrency)
        return {"running": running, "queued": self._in_flight - running}

    def submit(self, request: Request, protocol: str) -> Ticket:
        """Validate and admit ``request``; raise Overloaded when the queue is full."""
        params = request.params.validated()
        if params.max_new_tokens > self.limits.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens {params.max_new_tokens} is over this server's limit of "
                f"{self.limits.max_tokens_limit}", param="max_tokens",
            )
        with self._lock:
            if self._in_flight >= self.limits.max_concurrency + self.limits.max_queue:
                if self.metrics:
                    self.metrics.request_done(protocol, "429")
                raise Overloaded(
                    f"the server is busy ({self._in_flight} requests in flight); retry shortly"
                )
            self._in_flight += 1
        try:
            generation = self.engine.generate(request)
        except BaseException:
            self._release()
            raise
        self._publish()
        return Ticket(generation, protocol)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._publish()

    def _publish(self) -> None:
        if self.metrics:
            stats = self.stats()
            self.metrics.set_gauges(stats["running"], stats["queued"])

    def finish(self, ticket: Ticket, status: str) -> None:
        """Account for a finished (or failed, or abandoned) request exactly once."""
        self._release()
        if self.metrics:
            self.metrics.request_done(ticket.protocol, status)
            m: Metrics = ticket.generation.metrics
            self.metrics.observe(m)

    # -- convenience for protocol layers ------------------------------------------------
    def stream(self, ticket: Ticket) -> Iterator[Chunk]:
        """Iterate ``ticket`` synchronously, accounting for it however the caller stops."""
        status = "200"
        try:
            yield from ticket.generation
        except BaseException as exc:
            status = _status_of(exc)
            raise
        finally:
            if ticket.generation.cancelled and status == "200":
                status = "499"
            self.finish(ticket, status)

    async def astream(self, ticket: Ticket) -> AsyncIterator[Chunk]:
        """The asyncio twin of :meth:`stream`: a client that goes away cancels the engine."""
        status = "200"
        try:
            async for chunk in ticket.generation:
                yield chunk
        except BaseException as exc:
            status = _status_of(exc)
            raise
        finally:
            if not ticket.generation.wait(0):
                ticket.generation.cancel()
            if ticket.generation.cancelled and status == "200":
                status = "499"
            self.finish(ticket, status)


def _status_of(exc: BaseException) -> str:
    from vinolm.errors import VinolmError

    if isinstance(exc, VinolmError):
        return str(exc.http_status)
    return "499" if isinstance(exc, (GeneratorExit, KeyboardInterrupt)) else "500"
