"""Responses API <-> ModelService: a unary Response, or OpenAI's typed event sequence.

A stream runs response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta ..., response.output_text.done,
response.content_part.done, response.output_item.done and response.completed (or
response.incomplete when ``max_output_tokens`` cut the answer), each with its
``sequence_number``. With tools, the message item opens with the first text, and each tool
call is a ``function_call`` item of its own: output_item.added,
function_call_arguments.delta (the whole arguments, once the call is complete),
function_call_arguments.done and output_item.done. It is answered once the first chunk exists, so an error the engine
finds at once is still an HTTP 4xx; a later failure is an ``error`` event.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from vinolm.errors import EngineError, UnknownModel, VinolmError
from vinolm.server.answer import Answer
from vinolm.server.openai.protocol import ToolCallOut
from vinolm.server.openai.serving import EventStreamResponse, served_plan
from vinolm.server.responses.protocol import (
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from vinolm.server.service import ModelService

log = logging.getLogger("vinolm.responses")
PROTOCOL = "responses"


class ResponsesServing:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    @staticmethod
    def not_stored(response_id: str) -> UnknownModel:
        return UnknownModel(f"response {response_id!r} was not stored: vinolm keeps no state (store is false)",
                            param="response_id", code="response_not_found")

    async def create(self, body: ResponsesRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        plan = served_plan(body.tool_plan(), self.service)
        request = body.to_request(self.service.limits.max_tokens_limit, plan)
        frame = ResponseObject(
            id=f"resp_{uuid.uuid4().hex}", status="in_progress", model=model, instructions=body.instructions,
            max_output_tokens=body.max_output_tokens, temperature=request.params.temperature,
            top_p=request.params.top_p, metadata=body.metadata or {},
            tools=[t.model_dump(exclude_none=True) for t in body.tools or []],
            tool_choice=body.tool_choice.model_dump() if isinstance(body.tool_choice, BaseModel)
            else body.tool_choice or "auto", parallel_tool_calls=body.parallel_tool_calls is not False,
            text={"format": body.text.format.model_dump(by_alias=True, exclude_none=True)}
            if body.text is not None and body.text.format is not None else {"format": {"type": "text"}})
        answer = Answer(self.service, request, PROTOCOL, plan, max_tokens="max_output_tokens")
        if not body.stream:
            if not await answer.complete(raw):
                return Response(status_code=499)
            return JSONResponse(_finished(frame, answer, f"msg_{uuid.uuid4().hex}").model_dump(mode="json"))
        if not await answer.start(raw):
            return Response(status_code=499)  # the client left before the first token
        return EventStreamResponse(_events(frame, answer, plan.offered), on_close=answer.close)


def call_item(call: ToolCallOut) -> FunctionCallItem:
    return FunctionCallItem(id=f"fc_{call.id.removeprefix('call_')}", call_id=call.id, name=call.function.name,
                            arguments=call.function.arguments)


def _finished(frame: ResponseObject, answer: Answer, item_id: str | None) -> ResponseObject:
    """The finished Response: its message item (``item_id``; None when it has none) and calls."""
    metrics = answer.metrics
    status = "incomplete" if answer.hit_length and not answer.calls else "completed"
    usage = ResponseUsage(input_tokens=metrics.input_tokens, output_tokens=metrics.output_tokens,
                          total_tokens=metrics.input_tokens + metrics.output_tokens,
                          input_tokens_details=InputTokensDetails(cached_tokens=metrics.cached_tokens))
    message = [] if item_id is None or (answer.calls and not answer.content) else [
        OutputMessage(id=item_id, status=status, content=[OutputText(text=answer.content)])]
    return frame.model_copy(update={
        "status": status, "usage": usage,
        "incomplete_details": IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
        "output": [*message, *(call_item(call) for call in answer.calls)]})


class _Sequence:
    """Numbers the events of one stream, as the Responses API does."""

    def __init__(self) -> None:
        self.next = 0

    def event(self, name: str, **data: Any) -> str:
        payload = {"type": name, "sequence_number": self.next, **data}
        self.next += 1
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


async def _events(frame: ResponseObject, answer: Answer, lazy_message: bool = False) -> AsyncIterator[str]:
    """The event sequence; ``lazy_message`` (tools offered): no message item until text comes."""
    seq = _Sequence()
    item_id = f"msg_{uuid.uuid4().hex}"
    items = _Items(seq, item_id)
    try:
        yield seq.event("response.created", response=frame.model_dump(mode="json"))
        yield seq.event("response.in_progress", response=frame.model_dump(mode="json"))
        if not lazy_message:
            for event in items.open_message():
                yield event
        async for text, calls in answer.pieces():
            for event in items.text(text) if text else []:
                yield event
            for call in calls:
                for event in items.call(call):
                    yield event
        if items.count == 0:  # nothing at all was said: an empty message, as a unary answer has
            for event in items.open_message():
                yield event
        done = _finished(frame, answer, item_id if items.message_index is not None else None)
        for event in items.close_message(done):
            yield event
        yield seq.event(f"response.{done.status}", response=done.model_dump(mode="json"))
    except VinolmError as exc:
        log.warning("response stream %s failed: %s", frame.id, exc.message)
        for event in _failed(seq, frame, exc):
            yield event
    except Exception as exc:  # a bug of ours: say so in the stream rather than cut it
        log.exception("response stream %s failed", frame.id)
        for event in _failed(seq, frame, EngineError(f"internal error: {type(exc).__name__}")):
            yield event
    finally:
        answer.close()


def _failed(seq: _Sequence, frame: ResponseObject, error: VinolmError) -> list[str]:
    """The ``error`` event, then the response's own end (``response.failed``), as OpenAI ends one."""
    code = error.code or error.kind
    failed = frame.model_copy(update={"status": "failed", "error": {"code": code, "message": error.message}})
    return [seq.event("error", code=code, message=error.message, param=error.param),
            seq.event("response.failed", response=failed.model_dump(mode="json"))]


class _Items:
    """The output items of one stream as they open and close: at most one message (its one
    text part) and a function_call item per call, numbered by ``output_index``."""

    def __init__(self, seq: _Sequence, item_id: str) -> None:
        self.seq = seq
        self.item_id = item_id
        self.count = 0
        self.message_index: int | None = None
        self.parts: list[str] = []

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": self.message_index, "content_index": 0}

    def open_message(self) -> list[str]:
        self.message_index = self.count
        self.count += 1
        empty = OutputMessage(id=self.item_id, status="in_progress", content=[])
        return [self.seq.event("response.output_item.added", output_index=self.message_index,
                               item=empty.model_dump(mode="json")),
                self.seq.event("response.content_part.added", **self._where(),
                               part=OutputText(text="").model_dump(mode="json"))]

    def text(self, text: str) -> list[str]:
        events = self.open_message() if self.message_index is None else []
        self.parts.append(text)
        return [*events, self.seq.event("response.output_text.delta", **self._where(), delta=text, logprobs=[])]

    def call(self, call: ToolCallOut) -> list[str]:
        item = call_item(call)
        index = self.count
        self.count += 1
        where = {"item_id": item.id, "output_index": index}
        return [self.seq.event("response.output_item.added", output_index=index,
                               item=item.model_copy(update={"arguments": "", "status": "in_progress"})
                               .model_dump(mode="json")),
                self.seq.event("response.function_call_arguments.delta", **where, delta=item.arguments),
                self.seq.event("response.function_call_arguments.done", **where, arguments=item.arguments),
                self.seq.event("response.output_item.done", output_index=index, item=item.model_dump(mode="json"))]

    def close_message(self, done: ResponseObject) -> list[str]:
        if self.message_index is None:
            return []
        text = "".join(self.parts)
        item = OutputMessage(id=self.item_id, status=done.status if done.status != "failed" else "incomplete",
                             content=[OutputText(text=text)])
        return [self.seq.event("response.output_text.done", **self._where(), text=text, logprobs=[]),
                self.seq.event("response.content_part.done", **self._where(),
                               part=item.content[0].model_dump(mode="json")),
                self.seq.event("response.output_item.done", output_index=self.message_index,
                               item=item.model_dump(mode="json"))]
