"""Anthropic Messages <-> ModelService: a unary message, or Anthropic's SSE event sequence.

A stream is answered only once the first chunk exists, so an error the engine finds at
once (a prompt over the context) is still an HTTP 4xx; a later failure is Anthropic's
``error`` event, since the status line is gone by then. Content blocks are numbered as
they open: text as ``text_delta`` events, each tool call as a ``tool_use`` block whose
input arrives as one ``input_json_delta`` once the call is complete.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from vinolm.errors import VinolmError
from vinolm.server.answer import Answer
from vinolm.server.anthropic.protocol import (
    MessageResponse,
    MessagesRequest,
    OutputText,
    StopReason,
    TokenCount,
    ToolUse,
    Usage,
    error_body,
)
from vinolm.server.openai.protocol import ToolCallOut
from vinolm.server.openai.serving import EventStreamResponse, served_plan
from vinolm.server.service import ModelService
from vinolm.types import Request

log = logging.getLogger("vinolm.anthropic")
PROTOCOL = "anthropic"


def stop_reason(answer: Answer) -> StopReason:
    if answer.calls:
        return "tool_use"
    if answer.hit_length:
        return "max_tokens"
    return "stop_sequence" if answer.stop_sequence() is not None else "end_turn"


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


def tool_use(call: ToolCallOut) -> ToolUse:
    return ToolUse(id=call.id, name=call.function.name, input=json.loads(call.function.arguments))


class AnthropicServing:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    def count_tokens(self, body: MessagesRequest) -> TokenCount:
        self.service.check_model(body.model)
        body.check_supported()
        return TokenCount(input_tokens=self._prompt_tokens(Request(messages=body.to_messages(body.tool_plan()))))

    def _prompt_tokens(self, request: Request) -> int:
        """Tokens of the formatted conversation, before the engine trims anything."""
        engine = self.service.engine
        return len(engine.tokenize(engine.prompt_text(request), add_special_tokens=False))

    async def messages(self, body: MessagesRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        plan = served_plan(body.tool_plan(), self.service)
        request = body.to_request(plan)
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        answer = Answer(self.service, request, PROTOCOL, plan)
        if not body.stream:
            if not await answer.complete(raw):
                return Response(status_code=499)
            return JSONResponse(self._message(answer, model, message_id).model_dump(mode="json"))
        if not await answer.start(raw):
            return Response(status_code=499)  # the client left before the first token
        return EventStreamResponse(self._events(answer, model, message_id, self._prompt_tokens(request)),
                                   on_close=answer.close)

    def _message(self, answer: Answer, model: str, message_id: str) -> MessageResponse:
        metrics = answer.metrics
        return MessageResponse(
            id=message_id, model=model,
            content=[*([OutputText(text=answer.content)] if answer.content or not answer.calls else []),
                     *(tool_use(call) for call in answer.calls)],
            stop_reason=stop_reason(answer), stop_sequence=answer.stop_sequence(),
            usage=Usage(input_tokens=metrics.input_tokens, output_tokens=metrics.output_tokens))

    async def _events(self, answer: Answer, model: str, message_id: str, prompt_tokens: int) -> AsyncIterator[str]:
        start = MessageResponse(id=message_id, model=model, content=[],
                                usage=Usage(input_tokens=prompt_tokens, output_tokens=0))
        try:
            yield _event("message_start", {"message": start.model_dump(mode="json")})
            blocks = _Blocks()
            if not answer.output.plan.offered:  # without tools the text block opens at once, as Anthropic's does
                for event in blocks.open_text():
                    yield event
            yield _event("ping", {})
            async for text, calls in answer.pieces():
                for event in blocks.text(text):
                    yield event
                for call in calls:
                    for event in blocks.tool_use(call):
                        yield event
            for event in blocks.close(empty_text=not answer.calls):
                yield event
            metrics = answer.metrics
            yield _event("message_delta", {
                "delta": {"stop_reason": stop_reason(answer), "stop_sequence": answer.stop_sequence()},
                "usage": {"input_tokens": metrics.input_tokens, "output_tokens": metrics.output_tokens}})
            yield _event("message_stop", {})
        except VinolmError as exc:
            log.warning("message stream %s failed: %s", message_id, exc.message)
            yield _event("error", {"error": error_body(exc.http_status, exc.message)["error"]})
        except Exception as exc:  # a bug of ours: say so in the stream rather than cut it
            log.exception("message stream %s failed", message_id)
            yield _event("error", {"error": error_body(500, f"internal error: {type(exc).__name__}")["error"]})
        finally:
            answer.close()



class _Blocks:
    """The stream's content blocks: an open text block takes text deltas until a tool call
    closes it; each call is a whole tool_use block (start, one input_json_delta, stop)."""

    def __init__(self) -> None:
        self.index = -1
        self.text_open = False

    def open_text(self) -> list[str]:
        if self.text_open:
            return []
        self.text_open = True
        return self._open({"type": "text", "text": ""})

    def text(self, text: str) -> list[str]:
        if not text:
            return []
        return [*self.open_text(), _event("content_block_delta", {"index": self.index,
                                                        "delta": {"type": "text_delta", "text": text}})]

    def tool_use(self, call: ToolCallOut) -> list[str]:
        events = self.close()
        block = tool_use(call).model_dump(mode="json") | {"input": {}}
        events += self._open(block)
        events.append(_event("content_block_delta", {"index": self.index, "delta": {
            "type": "input_json_delta", "partial_json": call.function.arguments}}))
        events.append(_event("content_block_stop", {"index": self.index}))
        return events

    def close(self, empty_text: bool = False) -> list[str]:
        """Stop the open text block; ``empty_text``: an answer with no blocks gets an empty one."""
        if not self.text_open and empty_text and self.index < 0:
            return [*self._open({"type": "text", "text": ""}), _event("content_block_stop", {"index": self.index})]
        if not self.text_open:
            return []
        self.text_open = False
        return [_event("content_block_stop", {"index": self.index})]

    def _open(self, block: dict[str, Any]) -> list[str]:
        self.index += 1
        return [_event("content_block_start", {"index": self.index, "content_block": block})]
