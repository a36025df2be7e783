"""The OpenAI Responses wire format (``POST /v1/responses``) as pydantic models.

vinolm keeps no state: every request carries the whole conversation in ``input``, nothing
is stored (``store`` is false; ``previous_response_id`` and ``conversation`` are a 400, and
``GET /v1/responses/{id}`` a 404). Field names are OpenAI's, verbatim, so ``openai``'s
``client.responses.create`` and the OpenAI Agents SDK work unchanged. Fields vinolm does
not act on are a 400 naming them (code ``unsupported_parameter``), except the few that
change nothing for a local server (:data:`INERT`). The request owns its translation to
:mod:`vinolm.types`; errors use OpenAI's shape, as in the chat API.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest
from vinolm.server.answer import refuse_unsupported
from vinolm.types import Constraint, GenerationParams, Message, Request

API = "Responses API"
OPENAI_DEFAULT_TEMPERATURE = 1.0

#: Top-level fields that change nothing here, with the values accepted as no-ops.
INERT: dict[str, tuple[Any, ...]] = {
    "include": (), "tool_choice": ("auto", "none"), "parallel_tool_calls": (True, False),
    "truncation": ("disabled",), "service_tier": ("auto", "default"), "reasoning": (),
    "top_logprobs": (0,), "background": (False,), "max_tool_calls": (), "prompt": (),
    "stream_options": ({"include_obfuscation": False}, {"include_obfuscation": True}),
    "prompt_cache_retention": (), "context_management": (),
}
#: What input message items and their parts may carry besides role / content / text: the
#: bookkeeping fields an assistant item has when a client sends a previous answer back.
_ITEM_INERT: dict[str, tuple[Any, ...]] = {"id": (), "status": ("completed", "incomplete", "in_progress")}
_PART_INERT: dict[str, tuple[Any, ...]] = {"annotations": (), "logprobs": ()}
_TEXT_PARTS = ("input_text", "output_text")


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


class ContentPart(_Wire):
    type: str
    text: str | None = None

    def to_text(self, where: str) -> str:
        if self.type not in _TEXT_PARTS or self.text is None:
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves input_text "
                                 "and output_text parts only", param=f"{where}.type")
        refuse_unsupported(self.model_extra or {}, _PART_INERT, API, f"{where}.")
        return self.text


class InputItem(_Wire):
    """A message item; other item types (function calls, reasoning, ...) are a 400 naming them."""

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None

    def to_message(self, where: str) -> Message:
        if self.type != "message":
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves message items "
                                 "only", param=f"{where}.type")
        if self.role is None or self.content is None:
            missing = "role" if self.role is None else "content"
            raise InvalidRequest(f"{where}.{missing}: Field required", param=f"{where}.{missing}")
        refuse_unsupported(self.model_extra or {}, _ITEM_INERT, API, f"{where}.")
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return Message(role, self.content)
        return Message(role, "".join(p.to_text(f"{where}.content.{j}") for j, p in enumerate(self.content)))


class TextFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = Field(None, description="Always enforced while sampling; true and false alike.")
    description: str | None = None

    def to_constraint(self) -> Constraint | None:
        if self.type == "json_object":
            return Constraint("json_object")
        if self.type == "json_schema":
            if self.schema_ is None:
                raise InvalidRequest("text.format type json_schema needs schema", param="text.format.schema")
            return Constraint("json_schema", schema=self.schema_)
        return None


class TextConfig(_Wire):
    format: TextFormat | None = Field(None, description="text, json_object or json_schema (with schema).")
    verbosity: Literal["medium"] | None = Field(None, description="Only medium (the default) is served.")


class ResponsesRequest(_Wire):
    """POST /v1/responses."""

    model: str | None = Field(None, description="A served model name (GET /v1/models); default: the first one.")
    input: str | list[InputItem] = Field(..., description="Text (one user message) or a list of message items.")
    instructions: str | None = Field(None, description="A system message before the input.")
    max_output_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy; default 1.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    store: bool | None = Field(None, description="vinolm stores nothing: true is a 400.")
    previous_response_id: str | None = Field(None, description="Not served (vinolm keeps no state): a 400.")
    text: TextConfig | None = None
    tools: list[Any] | None = Field(None, description="Not supported yet: a non-empty list is a 400.")
    metadata: dict[str, str] | None = Field(None, description="Echoed in the response; changes nothing.")
    user: str | None = Field(None, description="Accepted; changes nothing.")
    safety_identifier: str | None = Field(None, description="Accepted; changes nothing.")
    prompt_cache_key: str | None = Field(None, description="Accepted; prefix caching is automatic.")

    def check_supported(self) -> None:
        if self.previous_response_id is not None:
            raise InvalidRequest("previous_response_id is not supported: vinolm keeps no state, so send the "
                                 "whole conversation in input", param="previous_response_id",
                                 code="unsupported_parameter")
        if self.store:
            raise InvalidRequest("store: true is not supported: vinolm keeps no state (send store false or "
                                 "omit it)", param="store", code="unsupported_parameter")
        refuse_unsupported(self.model_extra or {}, INERT, API)
        if self.text is not None:
            refuse_unsupported(self.text.model_extra or {}, {}, API, "text.")
            if self.text.format is not None:
                refuse_unsupported(self.text.format.model_extra or {}, {}, API, "text.format.")
        if self.tools:
            raise InvalidRequest("tools are not supported on this endpoint yet", param="tools",
                                 code="unsupported_parameter")

    def to_messages(self) -> list[Message]:
        messages = [Message("system", self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*messages, Message("user", self.input)]
        if not self.input:
            raise InvalidRequest("input is an empty list", param="input")
        return messages + [item.to_message(f"input.{i}") for i, item in enumerate(self.input)]

    def to_request(self, max_tokens_limit: int) -> Request:
        """The engine request; raises InvalidRequest naming the field."""
        self.check_supported()
        fmt = self.text.format if self.text is not None else None
        params = GenerationParams(
            max_new_tokens=self.max_output_tokens or max_tokens_limit,
            temperature=OPENAI_DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            constraint=fmt.to_constraint() if fmt is not None else None,
        ).validated()
        return Request(messages=self.to_messages(), params=params)


# -- answers ------------------------------------------------------------------------------------
class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """The Response: what a unary call returns and what the stream's events carry."""

    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    model: str
    output: list[OutputMessage] = Field(default_factory=list)
    incomplete_details: IncompleteDetails | None = None
    error: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool = False
    tool_choice: str = "auto"
    tools: list[Any] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    store: bool = False
    previous_response_id: None = None
    truncation: str = "disabled"
    metadata: dict[str, str] = Field(default_factory=dict)
    usage: ResponseUsage | None = None
