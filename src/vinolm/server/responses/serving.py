"""Responses API <-> ModelService: a unary Response, or OpenAI's typed event sequence.

A stream runs response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta ..., response.output_text.done,
response.content_part.done, response.output_item.done and response.completed (or
response.incomplete when ``max_output_tokens`` cut the answer), each with its
``sequence_number``. It is answered once the first chunk exists, so an error the engine
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

from vinolm.errors import EngineError, UnknownModel, VinolmError
from vinolm.server.answer import Answer
from vinolm.server.openai.serving import EventStreamResponse
from vinolm.server.responses.protocol import (
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
                            param="response_id")

    async def create(self, body: ResponsesRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        request = body.to_request(self.service.limits.max_tokens_limit)
        frame = ResponseObject(
            id=f"resp_{uuid.uuid4().hex}", status="in_progress", model=model, instructions=body.instructions,
            max_output_tokens=body.max_output_tokens, temperature=request.params.temperature,
            top_p=request.params.top_p, metadata=body.metadata or {},
            text={"format": body.text.format.model_dump(by_alias=True, exclude_none=True)}
            if body.text is not None and body.text.format is not None else {"format": {"type": "text"}})
        answer = Answer(self.service, request, PROTOCOL)
        if not body.stream:
            if not await answer.complete(raw):
                return Response(status_code=499)
            return JSONResponse(_finished(frame, answer, f"msg_{uuid.uuid4().hex}").model_dump(mode="json"))
        if not await answer.start(raw):
            return Response(status_code=499)  # the client left before the first token
        return EventStreamResponse(_events(frame, answer), on_close=answer.close)


def _finished(frame: ResponseObject, answer: Answer, item_id: str) -> ResponseObject:
    metrics = answer.metrics
    status = "incomplete" if answer.hit_length else "completed"
    usage = ResponseUsage(input_tokens=metrics.input_tokens, output_tokens=metrics.output_tokens,
                          total_tokens=metrics.input_tokens + metrics.output_tokens,
                          input_tokens_details=InputTokensDetails(cached_tokens=metrics.cached_tokens))
    return frame.model_copy(update={
        "status": status, "usage": usage,
        "incomplete_details": IncompleteDetails(reason="max_output_tokens") if answer.hit_length else None,
        "output": [OutputMessage(id=item_id, status=status, content=[OutputText(text=answer.text)])]})


class _Sequence:
    """Numbers the events of one stream, as the Responses API does."""

    def __init__(self) -> None:
        self.next = 0

    def event(self, name: str, **data: Any) -> str:
        payload = {"type": name, "sequence_number": self.next, **data}
        self.next += 1
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


async def _events(frame: ResponseObject, answer: Answer) -> AsyncIterator[str]:
    seq = _Sequence()
    item_id = f"msg_{uuid.uuid4().hex}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    try:
        yield seq.event("response.created", response=frame.model_dump(mode="json"))
        yield seq.event("response.in_progress", response=frame.model_dump(mode="json"))
        empty = OutputMessage(id=item_id, status="in_progress", content=[])
        yield seq.event("response.output_item.added", output_index=0, item=empty.model_dump(mode="json"))
        yield seq.event("response.content_part.added", **where, part=OutputText(text="").model_dump(mode="json"))
        async for chunk in answer.chunks():
            if chunk.text:
                yield seq.event("response.output_text.delta", **where, delta=chunk.text, logprobs=[])
        done = _finished(frame, answer, item_id)
        item = done.output[0]
        yield seq.event("response.output_text.done", **where, text=answer.text, logprobs=[])
        yield seq.event("response.content_part.done", **where, part=item.content[0].model_dump(mode="json"))
        yield seq.event("response.output_item.done", output_index=0, item=item.model_dump(mode="json"))
        yield seq.event(f"response.{done.status}", response=done.model_dump(mode="json"))
    except VinolmError as exc:
        log.warning("response stream %s failed: %s", frame.id, exc.message)
        yield seq.event("error", code=exc.code or exc.kind, message=exc.message, param=exc.param)
    except Exception as exc:  # a bug of ours: say so in the stream rather than cut it
        log.exception("response stream %s failed", frame.id)
        error = EngineError(f"internal error: {type(exc).__name__}")
        yield seq.event("error", code=error.kind, message=error.message, param=None)
    finally:
        answer.close()
