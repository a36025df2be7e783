"""OpenAI protocol <-> ModelService: unary answers and server-sent-event streams.

``n`` > 1 (and a list of prompts) is served by submitting one engine request per choice:
every engine supports it, greedy ``n`` works (OpenAI allows it), each choice streams on
its own, and with continuous batching the choices run side by side and share the
prompt's KV cache through prefix caching. With a seed, choice ``j`` uses ``seed + j`` so
the choices differ yet stay reproducible.

Errors the engine finds before the first token (a prompt longer than the context, a
conversation its chat format cannot express) still become HTTP 4xx: a stream is answered
only once every choice has produced its first event. Later failures arrive as an OpenAI
error event inside the stream, since the status line is gone by then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vinolm.errors import EngineError, InvalidRequest, VinolmError
from vinolm.prompts.spec import DEFAULT_TOOL_FORMAT
from vinolm.server.openai.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatStreamChoice,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DeltaFunction,
    DeltaMessage,
    DeltaToolCall,
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenLogprob,
    ToolPlan,
    TopLogprob,
    UsageInfo,
)
from vinolm.server.openai.tool_output import ToolOutput
from vinolm.server.registry import Registry
from vinolm.server.service import ModelService, Ticket
from vinolm.types import CONSTRAINT_KINDS, Chunk, Request

log = logging.getLogger("vinolm.openai")
PROTOCOL = "openai"
T = TypeVar("T")
_END = object()
_BACKGROUND: set[asyncio.Task[Any]] = set()  # pumps outlive a cancelled consumer briefly


def error_response(exc: VinolmError) -> ErrorResponse:
    """The one OpenAI error body, for HTTP errors and errors inside a stream alike."""
    return ErrorResponse(error=ErrorDetail(message=exc.message, type=exc.kind, param=exc.param,
                                           code=getattr(exc, "code", None)))


# -- many tickets, one stream -------------------------------------------------------------------
class MergedStream:
    """The chunks of several tickets in arrival order, tagged with their choice index.

    One small task per ticket pumps ``ModelService.astream`` into a queue. ``close()``
    cancels the pumps, which cancels their generations: that is how a client that left
    frees its slots, without awaiting anything in a cancelled context.
    """

    def __init__(self, service: ModelService, tickets: list[Ticket]) -> None:
        self.tickets = tickets
        self._queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        self._buffer: list[tuple[int, object]] = []
        self._tasks = [_spawn(self._pump(service, i, t)) for i, t in enumerate(tickets)]

    async def _pump(self, service: ModelService, index: int, ticket: Ticket) -> None:
        try:
            async for chunk in service.astream(ticket):
                self._queue.put_nowait((index, chunk))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._queue.put_nowait((index, exc))
        self._queue.put_nowait((index, _END))

    async def prime(self) -> bool:
        """Wait for every choice's first event; raise its error if one failed at once."""
        seen: set[int] = set()
        while len(seen) < len(self._tasks):
            index, payload = await self._queue.get()
            self._buffer.append((index, payload))
            if isinstance(payload, BaseException):
                self.close()
                raise payload
            seen.add(index)
        return True

    async def events(self) -> AsyncIterator[tuple[int, Chunk]]:
        remaining = len(self._tasks)
        while remaining:
            index, payload = self._buffer.pop(0) if self._buffer else await self._queue.get()
            if payload is _END:
                remaining -= 1
            elif isinstance(payload, BaseException):
                self.close()
                raise payload
            else:
                yield index, payload  # type: ignore[misc]

    def usage(self, prompt_groups: list[int]) -> UsageInfo:
        """Prompt tokens once per prompt (not per choice), completion tokens of every choice."""
        prompt = sum(self.tickets[i].generation.metrics.input_tokens for i in prompt_groups)
        completion = sum(t.generation.metrics.output_tokens for t in self.tickets)
        return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


class EventStreamResponse(StreamingResponse):
    """Server-sent events that call ``on_close`` however the response ends.

    When the client leaves, Starlette cancels the response while the body generator is
    usually parked at a ``yield``, so the generator's own ``finally`` would run only
    when it is garbage-collected; this hook frees the engine slots at once instead.
    """

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


@dataclass
class _Accumulated:
    """One choice of a unary answer, built from its chunks."""

    output: ToolOutput
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, chunk: Chunk) -> None:
        self.text.append(self.output.feed(chunk.text)[0])
        if chunk.logprobs:
            self.token_ids.extend(chunk.token_ids[: len(chunk.logprobs)])
            self.logprobs.extend(chunk.logprobs)
            self.top_logprobs.extend(chunk.top_logprobs or [])
        if chunk.finish_reason:
            self.text.append(self.output.finish()[0])
            self.finish_reason = "tool_calls" if self.output.calls else finish_reason(chunk.finish_reason)

    def message(self) -> AssistantMessage:
        """Content and calls; beside calls, the whitespace between them is no content."""
        text = "".join(self.text)
        if not self.output.calls:
            return AssistantMessage(content=text)
        return AssistantMessage(content=text.strip() or None, tool_calls=self.output.calls)


def finish_reason(reason: str | None) -> str | None:
    """stop and length pass; ``cancelled`` reaches a client only if the server cancelled
    (shutdown), since a client that left is not written to: it reads as ``stop``."""
    return None if reason is None else ("length" if reason == "length" else "stop")


# -- the serving object ---------------------------------------------------------------------------
@dataclass
class _Plan:
    """What one HTTP request became: engine requests per choice and the answer's frame."""

    kind: str  # "chat" | "completion"
    model: str
    requests: list[Request]
    prompt_groups: list[int]  # the first choice index of each prompt
    body: ChatCompletionRequest | CompletionRequest
    tools: ToolPlan = field(default_factory=ToolPlan)
    tool_format: str = DEFAULT_TOOL_FORMAT
    #: The request field the output constraint came from, named in the engine's complaints.
    constraint_field: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex}"


def model_list(registry: Registry) -> ModelList:
    """Every served name with its model's state, loaded or not (what `vinolm ps` reads)."""
    cards = []
    for model in registry.states():
        service = model["service"]
        task = _task(registry, model["names"][0], service)
        created = service.created if service is not None else registry.created
        load_s = model["load_seconds"] if model["loads"] else None
        cards += [ModelCard(id=name, created=created, state=model["state"], task=task, loads=model["loads"],
                            load_seconds=load_s) for name in model["names"]]
    return ModelList(data=cards)


def _task(registry: Registry, name: str, service: ModelService | None) -> str | None:
    """``chat`` or ``embedding``: the loaded engine's, else what the reference says, so a client
    choosing a model for /v1/embeddings need not load it first; None when nothing says."""
    if service is not None:
        return "embedding" if service.embeds else "chat"
    return registry.resolve(name).task()


def served_plan(plan: ToolPlan, service: ModelService) -> ToolPlan:
    """The plan in the served model's own call format, so ``tool_choice: auto`` is
    constrained to that family's calls on every API (a fake test model has no chat spec)."""
    spec = getattr(service.engine.model, "chat_spec", None)
    return dataclasses.replace(plan, tool_format=spec.tool_format if spec is not None else DEFAULT_TOOL_FORMAT)


class OpenAIServing:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    # -- generation ----------------------------------------------------------------------------
    async def completions(self, body: CompletionRequest, raw: HTTPRequest) -> Response:
        return await self._serve(self._plan("completion", body), raw)

    async def chat(self, body: ChatCompletionRequest, raw: HTTPRequest) -> Response:
        return await self._serve(self._plan("chat", body), raw)

    def _plan(self, kind: str, body: ChatCompletionRequest | CompletionRequest) -> _Plan:
        """Check in the order a client fixes things: the model, then the fields, then features."""
        model = self.service.check_model(body.model)
        body.check_supported()
        tools, tool_format = ToolPlan(), DEFAULT_TOOL_FORMAT
        if isinstance(body, ChatCompletionRequest):
            tools = served_plan(body.tool_plan(), self.service)
            tool_format = tools.tool_format or DEFAULT_TOOL_FORMAT
            requests = [body.to_request(self.service.limits.max_tokens_limit, tools)]
        else:
            requests = body.to_requests()
        self._check_logprobs(body)
        found = body.constraint(tools.constraint())
        expanded, groups = [], []
        for request in requests:
            groups.append(len(expanded))
            expanded += [_choice_request(request, j) for j in range(body.n)]
        return _Plan(kind, model, expanded, groups, body, tools, tool_format, found and found[0])

    def _check_logprobs(self, body: ChatCompletionRequest | CompletionRequest) -> None:
        if body.wants_logprobs and not self.service.supports_logprobs:
            raise InvalidRequest(f"logprobs are not supported by the {self.service.engine.name} engine",
                                 param="logprobs")

    async def _serve(self, plan: _Plan, raw: HTTPRequest) -> Response:
        try:
            merged = MergedStream(self.service, self.service.submit_all(
                plan.requests, PROTOCOL, "n" if plan.body.n > 1 else "prompt"))
            if not plan.body.stream:
                answer = await _unless_disconnected(raw, self._unary(plan, merged), merged.close)
                return answer if answer is not None else Response(status_code=499)
            if not await _unless_disconnected(raw, merged.prime(), merged.close):
                return Response(status_code=499)  # the client left while it waited for its first token
        except InvalidRequest as exc:
            if plan.constraint_field and exc.param in (*CONSTRAINT_KINDS, "constraint"):
                exc.param = plan.constraint_field  # the engine names the kind; the client knows its field
            elif plan.kind == "completion" and exc.param == "top_logprobs":
                exc.param = "logprobs"  # a completion's logprobs N asks for N alternatives
            raise
        return EventStreamResponse(self._sse(plan, merged), on_close=merged.close)

    # -- unary --------------------------------------------------------------------------------
    async def _unary(self, plan: _Plan, merged: MergedStream) -> JSONResponse:
        choices = [_Accumulated(ToolOutput(plan.tools, plan.tool_format)) for _ in plan.requests]
        async for index, chunk in merged.events():
            choices[index].add(chunk)
        usage = merged.usage(plan.prompt_groups)
        if plan.kind == "chat":
            answer: Any = ChatCompletionResponse(id=plan.id, model=plan.model, usage=usage, choices=[
                ChatChoice(index=i, message=c.message(),
                           logprobs=self._chat_logprobs(c.token_ids, c.logprobs, c.top_logprobs),
                           finish_reason=c.finish_reason or "stop")  # type: ignore[arg-type]
                for i, c in enumerate(choices)])
        else:
            answer = CompletionResponse(id=plan.id, model=plan.model, usage=usage, choices=[
                CompletionChoice(index=i, text="".join(c.text),
                                 logprobs=self._completion_logprobs(c.token_ids, c.logprobs, c.top_logprobs),
                                 finish_reason=c.finish_reason or "stop")  # type: ignore[arg-type]
                for i, c in enumerate(choices)])
        return JSONResponse(answer.model_dump(mode="json"))

    # -- streaming ----------------------------------------------------------------------------
    async def _sse(self, plan: _Plan, merged: MergedStream) -> AsyncIterator[str]:
        outputs = [ToolOutput(plan.tools, plan.tool_format) for _ in plan.requests]
        try:
            if plan.kind == "chat":
                for i in range(len(plan.requests)):
                    yield _data(self._chat_chunk(plan, i, DeltaMessage(role="assistant", content="")))
            async for index, chunk in merged.events():
                if plan.kind == "chat":
                    event = self._chat_stream_chunk(plan, index, chunk, outputs[index])
                elif chunk.text or chunk.finish_reason or chunk.logprobs:
                    event = self._completion_stream_chunk(plan, index, chunk)
                else:
                    event = None
                if event is not None:
                    yield _data(event)
            if plan.body.include_usage:
                yield _data(self._usage_chunk(plan, merged.usage(plan.prompt_groups)))
            yield "data: [DONE]\n\n"
        except VinolmError as exc:  # the error, then the stream's usual end (as vLLM's)
            log.warning("%s stream %s failed: %s", plan.kind, plan.id, exc.message)
            yield _data(error_response(exc)) + "data: [DONE]\n\n"
        except Exception as exc:  # a bug of ours: say so in the stream rather than cut it
            log.exception("%s stream %s failed", plan.kind, plan.id)
            yield _data(error_response(EngineError(f"internal error: {type(exc).__name__}"))) + "data: [DONE]\n\n"
        finally:
            merged.close()

    def _chat_stream_chunk(self, plan: _Plan, index: int, chunk: Chunk, output: ToolOutput
                           ) -> ChatCompletionStreamResponse | None:
        """The chunk's text as content and completed calls as tool-call deltas; None when
        everything is held back (it may be the start of a call)."""
        before = len(output.calls)
        text, calls = output.feed(chunk.text)
        reason = finish_reason(chunk.finish_reason)
        if reason is not None:
            rest, more = output.finish()
            text, calls = text + rest, calls + more
            reason = "tool_calls" if output.calls else reason
        if not (text or calls or reason or chunk.logprobs):
            return None
        deltas = [DeltaToolCall(index=before + k, id=c.id, type="function",
                                function=DeltaFunction(name=c.function.name, arguments=c.function.arguments))
                  for k, c in enumerate(calls)] or None
        ids = chunk.token_ids[: len(chunk.logprobs or [])]
        content = (text or None) if deltas else text  # beside calls, no empty content
        return self._chat_chunk(plan, index, DeltaMessage(content=content, tool_calls=deltas),
                                reason, self._chat_logprobs(ids, chunk.logprobs or [], chunk.top_logprobs or []))

    def _completion_stream_chunk(self, plan: _Plan, index: int, chunk: Chunk) -> CompletionStreamResponse:
        ids = chunk.token_ids[: len(chunk.logprobs or [])]
        return CompletionStreamResponse(id=plan.id, model=plan.model, choices=[CompletionChoice(
            index=index, text=chunk.text, finish_reason=finish_reason(chunk.finish_reason),  # type: ignore[arg-type]
            logprobs=self._completion_logprobs(ids, chunk.logprobs or [], chunk.top_logprobs or []))])

    def _chat_chunk(self, plan: _Plan, index: int, delta: DeltaMessage, reason: str | None = None,
                    logprobs: ChoiceLogprobs | None = None) -> ChatCompletionStreamResponse:
        return ChatCompletionStreamResponse(id=plan.id, model=plan.model, choices=[ChatStreamChoice(
            index=index, delta=delta, finish_reason=reason, logprobs=logprobs)])  # type: ignore[arg-type]

    def _usage_chunk(self, plan: _Plan, usage: UsageInfo) -> Any:
        if plan.kind == "chat":
            return ChatCompletionStreamResponse(id=plan.id, model=plan.model, choices=[], usage=usage)
        return CompletionStreamResponse(id=plan.id, model=plan.model, choices=[], usage=usage)

    # -- logprobs (only when the engine reports them) ---------------------------------------------
    def _tokens(self, ids: list[int]) -> list[str]:
        return [self.service.engine.detokenize([i], skip_special_tokens=False) for i in ids]

    def _alternatives(self, tops: list[list[tuple[int, float]]]) -> list[list[TopLogprob]]:
        return [[TopLogprob(token=t, logprob=lp, bytes=list(t.encode()))
                 for t, (_, lp) in zip(self._tokens([i for i, _ in step]), step)] for step in tops]

    def _chat_logprobs(self, ids: list[int], logprobs: list[float],
                       tops: list[list[tuple[int, float]]]) -> ChoiceLogprobs | None:
        if not logprobs:
            return None
        alternatives = self._alternatives(tops) or [[] for _ in ids]
        return ChoiceLogprobs(content=[TokenLogprob(token=t, logprob=lp, bytes=list(t.encode()), top_logprobs=alt)
                                       for t, lp, alt in zip(self._tokens(ids), logprobs, alternatives)])

    def _completion_logprobs(self, ids: list[int], logprobs: list[float],
                             tops: list[list[tuple[int, float]]]) -> CompletionLogprobs | None:
        if not logprobs:
            return None
        tokens = self._tokens(ids)
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        top = [{a.token: a.logprob for a in step} for step in self._alternatives(tops)] or None
        return CompletionLogprobs(tokens=tokens, token_logprobs=list(logprobs), top_logprobs=top, text_offset=offsets)


def _choice_request(request: Request, j: int) -> Request:
    """Choice ``j`` of ``n``: the same request, with ``seed + j`` so seeded choices differ."""
    if j == 0 or request.params.seed is None:
        return request
    return dataclasses.replace(request, params=request.params.with_(seed=request.params.seed + j))


def _data(model: Any) -> str:
    return f"data: {model.model_dump_json()}\n\n"


async def _unless_disconnected(raw: HTTPRequest, work: Awaitable[T], on_disconnect: Callable[[], None]) -> T | None:
    """Run ``work`` unless the client goes away first; then call ``on_disconnect`` and return None.

    After the body is read, the ASGI ``receive`` channel only ever yields
    ``http.disconnect``, so waiting on it costs nothing and needs no polling.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(raw))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            on_disconnect()
    return task.result() if task in done else None


async def _disconnected(raw: HTTPRequest) -> None:
    while (await raw.receive())["type"] != "http.disconnect":
        pass

