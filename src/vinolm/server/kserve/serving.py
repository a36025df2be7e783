"""KServe requests on the ModelService, shared by the REST routes and the gRPC servicer.

N prompts in one request are N submits: the engine batches them continuously with
everyone else's requests. Their chunks are merged into one stream tagged with the prompt
index. Whoever stops consuming early (a client that disconnects or cancels, or one prompt
failing) cancels every generation of the request, and each ticket is accounted exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vinolm.server.kserve.tensors import Settings
from vinolm.server.service import ModelService, Ticket
from vinolm.types import Message, Request


@dataclass
class Completed:
    """The answer to one KServe request: per prompt, its text and generated-token count."""

    completions: list[str]
    token_counts: list[int]


def to_requests(prompts: list[str], settings: Settings) -> list[Request]:
    """One engine request per prompt; by default a prompt is a user message, as in the demo."""
    if settings.chat:
        return [Request(messages=[Message("user", p)], params=settings.params) for p in prompts]
    return [Request(prompt=p, params=settings.params) for p in prompts]


async def merged_chunks(service: ModelService, tickets: list[Ticket]) -> AsyncIterator[tuple[int, str]]:
    """``(prompt index, new text)`` as each generation produces it, until all are done."""
    queue: asyncio.Queue[tuple[int, str | BaseException | None]] = asyncio.Queue()
    started: set[int] = set()

    async def pump(index: int, ticket: Ticket) -> None:
        started.add(index)  # from here on service.astream accounts for the ticket
        try:
            async for chunk in service.astream(ticket):
                if chunk.text:
                    queue.put_nowait((index, chunk.text))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised there
            queue.put_nowait((index, exc))
            return
        queue.put_nowait((index, None))

    tasks = [asyncio.create_task(pump(i, t)) for i, t in enumerate(tickets)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        await _stop(service, tickets, tasks, started)


async def _stop(service: ModelService, tickets: list[Ticket], tasks: list[asyncio.Task[None]],
                started: set[int]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for index, ticket in enumerate(tickets):
        if index not in started:  # cancelled before its first step: nobody accounted for it
            service.abandon(ticket)


async def complete(service: ModelService, tickets: list[Ticket]) -> Completed:
    """Run all tickets to the end and collect their texts."""
    texts: list[list[str]] = [[] for _ in tickets]
    async for index, text in merged_chunks(service, tickets):
        texts[index].append(text)
    return Completed(["".join(parts) for parts in texts], token_counts(tickets))


def token_counts(tickets: list[Ticket]) -> list[int]:
    """Generated tokens per finished ticket, as the engine counted them."""
    return [ticket.generation.metrics.output_tokens for ticket in tickets]
