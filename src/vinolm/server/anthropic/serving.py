"""Anthropic Messages <-> ModelService: a unary message, or Anthropic's SSE event sequence.

A stream is answered only once the first chunk exists, so an error the engine finds at
once (a prompt over the context) is still an HTTP 4xx; a later failure is Anthropic's
``error`` event, since the status line is gone by then.
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
    Usage,
    error_body,
)
from vinolm.server.openai.serving import EventStreamResponse
from vinolm.server.service import ModelService
from vinolm.types import Request

log = logging.getLogger("vinolm.anthropic")
PROTOCOL = "anthropic"


def stop_reason(answer: Answer) -> StopReason:
    if answer.hit_length:
        return "max_tokens"
    return "stop_sequence" if answer.stop_sequence() is not None else "end_turn"


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


class AnthropicServing:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    def count_tokens(self, body: MessagesRequest) -> TokenCount:
        self.service.check_model(body.model)
        body.check_supported()
        return TokenCount(input_tokens=self._prompt_tokens(Request(messages=body.to_messages())))

    def _prompt_tokens(self, request: Request) -> int:
        """Tokens of the formatted conversation, before the engine trims anything."""
        engine = self.service.engine
        return len(engine.tokenize(engine.prompt_text(request), add_special_tokens=False))

    async def messages(self, body: MessagesRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        request = body.to_request()
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        answer = Answer(self.service, request, PROTOCOL)
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
            id=message_id, model=model, content=[OutputText(text=answer.text)],
            stop_reason=stop_reason(answer), stop_sequence=answer.stop_sequence(),
            usage=Usage(input_tokens=metrics.input_tokens, output_tokens=metrics.output_tokens))

    async def _events(self, answer: Answer, model: str, message_id: str, prompt_tokens: int) -> AsyncIterator[str]:
        start = MessageResponse(id=message_id, model=model, content=[],
                                usage=Usage(input_tokens=prompt_tokens, output_tokens=0))
        try:
            yield _event("message_start", {"message": start.model_dump(mode="json")})
            yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            yield _event("ping", {})
            async for chunk in answer.chunks():
                if chunk.text:
                    yield _event("content_block_delta", {"index": 0,
                                                         "delta": {"type": "text_delta", "text": chunk.text}})
            yield _event("content_block_stop", {"index": 0})
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

