"""The one object every protocol (OpenAI, KServe REST, gRPC, web UI) talks to.

It owns the engine, decides admission (a bounded queue answered with ``Overloaded`` at
once rather than a time-out), tracks running requests, and records metrics. Protocol
code never imports OpenVINO: it builds a :class:`~vinolm.types.Request`, calls
:meth:`ModelService.submit`, and iterates the returned generation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vinolm.errors import InvalidRequest, Overloaded, Unavailable, UnknownModel, VinolmError
from vinolm.types import Chunk, Metrics, Request

if TYPE_CHECKING:
    from vinolm.engines.base import Engine, Generation
    from vinolm.engines.embedding import Embeddings
    from vinolm.server.metrics import ServerMetrics


#: Set per incoming request by a protocol boundary (see :func:`watch_submissions`).
_SUBMITTED: ContextVar[list[bool] | None] = ContextVar("vinolm_submitted", default=None)


def watch_submissions() -> list[bool]:
    """Note, for the current request's context, whether anything reaches ``submit``.

    The service counts every request from ``submit`` on (its rejections included); a
    boundary that refuses a request earlier (bad JSON, unknown model, no API key) counts
    it itself only when ``submitted_here()`` is false, so each request is counted once.
    Tasks and ``to_thread`` calls copy the context, and the flag is a shared box, so a
    submit made in any of them is seen.
    """
    box = [False]
    _SUBMITTED.set(box)
    return box


def submitted_here() -> bool:
    box = _SUBMITTED.get()
    return bool(box and box[0])


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
        #: Set by :meth:`drain`: new requests get 503 and readiness is false, so a load
        #: balancer (a Kubernetes rolling update, Ray) sends them elsewhere while the
        #: requests already admitted finish.
        self.draining = False
        if metrics is not None:
            metrics.watch_kv_cache(self.model_name, self.kv_cache_usage)
            self._publish()  # the per-model gauges exist (at 0) before the first request: autoscalers query them

    def kv_cache_usage(self) -> float | None:
        """The current engine's KV-cache use (0..1); None for engines without a paged cache."""
        read = getattr(self.engine, "kv_cache_usage", None)
        return read() if read is not None else None

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
        return self.engine is not None and not self.draining

    def drain(self) -> None:
        """Stop admitting; what is in flight runs on (see ``in_flight``)."""
        self.draining = True

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stats(self) -> dict[str, int]:
        running = min(self._in_flight, self.limits.max_concurrency)
        return {"running": running, "queued": self._in_flight - running}

    @property
    def embeds(self) -> bool:
        """An embedding model: vectors out, no generation."""
        return bool(getattr(self.engine.model, "is_embedding", False))

    def require(self, task: str) -> ModelService:
        """Refuse a request the model cannot do (``generate`` or ``embed``) before any work."""
        if task == "embed" and not self.embeds:
            raise InvalidRequest(f"model {self.model_name!r} generates text and does not embed; "
                                 "ask an embedding model (GET /v1/models) for embeddings", param="model")
        if task == "generate" and self.embeds:
            raise InvalidRequest(f"model {self.model_name!r} is an embedding model and does not generate "
                                 "text; ask it for embeddings (POST /v1/embeddings)", param="model")
        return self

    async def embed(self, inputs: list[str] | list[list[int]], protocol: str, dimensions: int | None = None,
                    kind: str = "document") -> Embeddings:
        """Vectors for ``inputs`` through the same admission as generation (limits, 429,
        draining, metrics); the forward pass runs on a worker thread."""
        self.require("embed")
        self._admit(protocol)
        try:
            result: Embeddings = await asyncio.to_thread(self.engine.embed, inputs, dimensions, kind)  # type: ignore[attr-defined]
        except BaseException as exc:
            if self.metrics:
                self.metrics.request_done(protocol, _status_of(exc))
            raise
        finally:
            self._release()
        if self.metrics:
            self.metrics.request_done(protocol, "200")
        return result

    def _admit(self, protocol: str) -> None:
        """Take a slot or refuse: 503 while draining, 429 with a full queue (both counted)."""
        with self._lock:
            if self.draining:
                if self.metrics:
                    self.metrics.request_done(protocol, "503")
                raise Unavailable("the server is shutting down and takes no new requests; retry on another one")
            if self._in_flight >= self.limits.max_concurrency + self.limits.max_queue:
                if self.metrics:
                    self.metrics.request_done(protocol, "429")
                raise Overloaded(
                    f"the server is busy ({self._in_flight} requests in flight); retry shortly"
                )
            self._in_flight += 1
        self._publish()

    @property
    def supports_logprobs(self) -> bool:
        """Whether the engine fills ``Chunk.logprobs`` (an engine opts in with ``supports_logprobs = True``)."""
        return bool(getattr(self.engine, "supports_logprobs", False))

    def switch_device(self, device: str) -> None:
        """Recompile the model on ``device`` for everyone; blocking (the UI runs it off-loop).

        New requests go to the new engine at once; the old one is closed after the
        requests it is still serving finish. A failed compile keeps the old engine.
        """
        from dataclasses import replace

        from vinolm.engines import load_engine
        from vinolm.engines.ovconfig import check_device
        from vinolm.errors import EngineError

        old = self.engine
        if device == old.options.device:
            return
        check_device(device)
        try:
            new = load_engine(old.name, old.model, replace(old.options, device=device))
        except VinolmError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot compile the model for {device}: {exc}") from exc
        with self._lock:
            self.engine = new
        threading.Thread(target=_retire, args=(old,), name="vinolm-retire", daemon=True).start()

    def submit_all(self, requests: list[Request], protocol: str, param: str) -> list[Ticket]:
        """Admit every request of one call (n choices, a batch of prompts) or none: a refusal
        gives back the ones already admitted. More than the server ever holds at once is the
        caller's 400 naming ``param``, not a 429 that no retry could get past."""
        capacity = self.limits.max_concurrency + self.limits.max_queue
        if len(requests) > capacity:  # counted by the protocol layer, as before any submit
            raise InvalidRequest(f"the request asks for {len(requests)} answers at once, more than this server "
                                 f"holds ({capacity}: --max-concurrency plus --max-queue)", param=param)
        tickets: list[Ticket] = []
        try:
            for request in requests:
                tickets.append(self.submit(request, protocol))
        except VinolmError as exc:
            for ticket in tickets:
                self.abandon(ticket, str(exc.http_status))
            raise
        return tickets

    def submit(self, request: Request, protocol: str) -> Ticket:
        """Validate and admit ``request``; raise Overloaded when the queue is full.

        Every rejection raised here is counted in the metrics, so a protocol layer that
        called ``submit`` has nothing left to account for.
        """
        box = _SUBMITTED.get()
        if box is not None:
            box[0] = True
        try:
            self.require("generate")
            params = request.params.validated()
            if params.max_new_tokens > self.limits.max_tokens_limit:
                raise InvalidRequest(
                    f"max_tokens {params.max_new_tokens} is over this server's limit of "
                    f"{self.limits.max_tokens_limit}", param="max_tokens",
                )
        except VinolmError as exc:
            if self.metrics:
                self.metrics.request_done(protocol, str(exc.http_status))
            raise
        self._admit(protocol)
        try:
            generation = self.engine.generate(request)
        except BaseException as exc:
            self._release()
            if self.metrics:
                self.metrics.request_done(protocol, _status_of(exc))
            raise
        self._publish()
        return Ticket(generation, protocol)

    def abandon(self, ticket: Ticket, status: str = "499") -> None:
        """Give back a ticket that was never iterated (e.g. its siblings of ``n`` > 1 were refused)."""
        ticket.generation.cancel()
        self.finish(ticket, status)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._publish()

    def _publish(self) -> None:
        """Push the gauges, reading and writing under the lock so the last writer is current."""
        if self.metrics:
            with self._lock:
                stats = self.stats()
                self.metrics.set_gauges(stats["running"], stats["queued"], model=self.model_name)

    def finish(self, ticket: Ticket, status: str) -> None:
        """Account for a finished (or failed, or abandoned) request exactly once.

        Counters first, gauges last: whoever sees the running count drop also sees the
        request's status and tokens.
        """
        if self.metrics:
            m: Metrics = ticket.generation.metrics
            self.metrics.observe(m)
            self.metrics.request_done(ticket.protocol, status)
        self._release()

    def _settle(self, ticket: Ticket, status: str) -> None:
        """Account for ``ticket`` once its engine work has really stopped.

        A consumer that leaves early cancels the generation; the engine notices within a
        token step. Releasing the slot only then keeps the running gauge honest (it is the
        engine's load, not the number of open connections) and counts the tokens the
        cancelled request did generate. The wait happens on a small thread, never on the
        event loop.
        """
        generation = ticket.generation
        if generation.cancelled and status == "200":
            status = "499"
        if generation.wait(0):
            self.finish(ticket, status)
            return
        generation.cancel()

        def settle_later() -> None:
            generation.wait()
            self.finish(ticket, status)

        threading.Thread(target=settle_later, name="vinolm-settle", daemon=True).start()

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
            self._settle(ticket, status)

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
            self._settle(ticket, status)


def _status_of(exc: BaseException) -> str:
    """The status a failed or abandoned request is counted under (499: the client left)."""
    if isinstance(exc, VinolmError):
        return str(exc.http_status)
    if isinstance(exc, (GeneratorExit, KeyboardInterrupt, asyncio.CancelledError)):
        return "499"
    return "500"


def _retire(engine: object, poll_s: float = 0.2, limit_s: float = 600.0) -> None:
    """Close a replaced engine once nothing runs on it any more."""
    stats = getattr(engine, "stats", None)
    deadline = time.monotonic() + limit_s
    while stats is not None and time.monotonic() < deadline:
        current = stats()
        if not current.get("running") and not current.get("queued"):
            break
        time.sleep(poll_s)
    engine.close()  # type: ignore[attr-defined]
