"""What both pages share: one browser session's answer, streamed through ModelService.

Stop and Clear must reach the engine, not only the page, and they arrive as separate
Gradio events. So each session's running ticket is kept in a :class:`Sessions` registry,
keyed by Gradio's session hash: Stop looks the ticket up and cancels its generation; the
stream then ends within a token step and the handler finishes normally, keeping the
partial answer. Clear cancels too, then waits until the stream has ended before the page
is emptied in a second step: an update the stream had already handed to Gradio could
otherwise reach the browser after the emptied boxes and refill them. A tab that closes
mid-answer needs nothing from us: Gradio cancels the session's running event, and leaving
:meth:`ModelService.astream` early cancels the engine. The pages' handlers are all
coroutines, so the registry is only ever touched from the server's event loop, and
nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vinolm.types import Chunk, Metrics, Request

if TYPE_CHECKING:
    from vinolm.server.service import ModelService, Ticket

#: The label the UI's requests carry in the server metrics.
PROTOCOL = "ui"


@dataclass
class Progress:
    """The answer so far and the numbers for the performance line."""

    text: str = ""
    tokens: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    metrics: Metrics | None = field(default=None, repr=False)

    def add(self, chunk: Chunk) -> None:
        now = time.perf_counter()
        if chunk.token_ids:
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
            self.tokens += len(chunk.token_ids)
        self.text += chunk.text

    def finish(self, metrics: Metrics) -> None:
        """Take the engine's own count and timing, which are exact, once it is done."""
        self.metrics = metrics
        self.tokens = max(self.tokens, metrics.output_tokens)

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first over the time since the first (as the engine reports)."""
        if self.metrics is not None and self.metrics.decode_tokens_per_s > 0:
            return self.metrics.decode_tokens_per_s
        if self.first_token_at is None or self.last_token_at is None or self.tokens < 2:
            return 0.0
        elapsed = self.last_token_at - self.first_token_at
        return (self.tokens - 1) / elapsed if elapsed > 0 else 0.0

    def performance_line(self) -> str:
        return (f"Average generation speed: {self.tokens_per_s:.1f} tokens/s. "
                f"Total generated tokens: {self.tokens}")


#: How long Clear waits for a cancelled stream to end. Gradio may cancel the answer's task
#: while it is suspended at a ``yield``; then its cleanup never runs and only this ends the wait.
DISCARD_WAIT_S = 5.0


@dataclass
class _Run:
    ticket: Ticket
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Sessions:
    """The running ticket of each browser session, so another event (Stop, Clear) can reach it."""

    def __init__(self) -> None:
        self._running: dict[str, _Run] = {}

    def busy(self, session: str) -> bool:
        return session in self._running

    def stop(self, session: str) -> None:
        """Stop: cancel ``session``'s generation in the engine; its stream ends with the answer so far."""
        run = self._running.get(session)
        if run is not None:
            run.ticket.generation.cancel()

    async def discard(self, session: str) -> None:
        """Clear: cancel it, and return once its stream has ended and can send no more updates."""
        run = self._running.pop(session, None)
        if run is None:
            return
        run.ticket.generation.cancel()
        try:
            await asyncio.wait_for(run.ended.wait(), DISCARD_WAIT_S)
        except TimeoutError:
            pass

    async def stream(self, service: ModelService, request: Request, session: str) -> AsyncIterator[Progress]:
        """Submit ``request`` for ``session`` and yield the growing answer; the last one has the metrics.

        Raises what :meth:`ModelService.submit` and the engine raise (InvalidRequest,
        Overloaded, EngineError); the caller turns them into a message on the page.
        """
        run = _Run(service.submit(request, protocol=PROTOCOL))
        self._running[session] = run
        progress = Progress()
        try:
            async with aclosing(service.astream(run.ticket)) as chunks:
                async for chunk in chunks:
                    if self._running.get(session) is not run:
                        return
                    progress.add(chunk)
                    yield progress
            if self._running.get(session) is not run:
                return
        finally:
            if self._running.get(session) is run:
                del self._running[session]
            run.ended.set()
        progress.finish(run.ticket.generation.metrics)
        yield progress
