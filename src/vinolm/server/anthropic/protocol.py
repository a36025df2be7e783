"""The Anthropic Messages wire format (``POST /v1/messages``) as pydantic models.

Field names are Anthropic's, verbatim, so the ``anthropic`` SDK works unchanged. Types are
strict and ranges checked here, so a bad request is a 400 in Anthropic's error shape before
anything is queued. Fields vinolm does not act on are a 400 naming them, except the few
that change nothing for a local server (:data:`INERT`). The request owns its translation
to :mod:`vinolm.types`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest
from vinolm.server.answer import refuse_unsupported
from vinolm.types import Constraint, GenerationParams, Message, Request

API = "Anthropic Messages API"
ANTHROPIC_DEFAULT_TEMPERATURE = 1.0

#: Fields that change nothing here, with the values accepted as no-ops (null and empty too).
INERT: dict[str, tuple[Any, ...]] = {
    "service_tier": ("auto", "standard_only"),
    "thinking": ({"type": "disabled"},),
    "tool_choice": ({"type": "auto"}, {"type": "none"}),
    "cache_control": (),
    "container": (), "mcp_servers": (), "context_management": (), "inference_geo": (),
    "speed": ("standard",), "user_profile_id": (), "workspace_id": (),
}
_BLOCK_INERT: dict[str, tuple[Any, ...]] = {"cache_control": (), "citations": ()}

#: Anthropic's error ``type`` per HTTP status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}`` for any failure."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class TextBlock(_Wire):
    """Any content block; only ``text`` is served, others are a 400 naming the block."""

    type: str
    text: str | None = None

    def to_text(self, where: str) -> str:
        if self.type != "text" or self.text is None:
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves text blocks only",
                                 param=f"{where}.type")
        refuse_unsupported(self.model_extra or {}, _BLOCK_INERT, API, f"{where}.")
        return self.text


class InputMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[TextBlock]

    def to_message(self, where: str) -> Message:
        refuse_unsupported(self.model_extra or {}, {}, API, f"{where}.")
        if isinstance(self.content, str):
            return Message(self.role, self.content)
        parts = [block.to_text(f"{where}.content.{j}") for j, block in enumerate(self.content)]
        return Message(self.role, "".join(parts))


class OutputFormat(_Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(..., alias="schema")


class OutputConfig(_Wire):
    format: OutputFormat | None = Field(None, description="json_schema: the answer follows the schema.")
    effort: str | None = None


class Metadata(_Wire):
    user_id: str | None = None


class MessagesRequest(_Wire):
    """POST /v1/messages (and /v1/messages/count_tokens, which has no ``max_tokens``)."""

    model: str = Field(..., description="A served model name; GET /v1/models lists them.")
    messages: list[InputMessage] = Field(..., min_length=1)
    system: str | list[TextBlock] | None = Field(None, description="Instructions, as text or text blocks.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (required by /v1/messages).")
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0.0, le=1.0, description="0 = greedy; default 1.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    tools: list[Any] | None = Field(None, description="Not supported yet: a non-empty list is a 400.")
    output_config: OutputConfig | None = Field(None, description="format.schema constrains the answer to it.")
    meta: Metadata | None = Field(None, alias="metadata")

    def check_supported(self) -> None:
        refuse_unsupported(self.model_extra or {}, INERT, API)
        if self.meta is not None:
            refuse_unsupported(self.meta.model_extra or {}, {}, API, "metadata.")
        if self.output_config is not None:
            if self.output_config.effort is not None:
                raise InvalidRequest(f"output_config.effort is not supported by vinolm's {API}",
                                     param="output_config.effort")
            refuse_unsupported(self.output_config.model_extra or {}, {}, API, "output_config.")
        if self.tools:
            raise InvalidRequest("tools are not supported on this endpoint yet", param="tools")

    def to_messages(self) -> list[Message]:
        messages = []
        if isinstance(self.system, str) and self.system:
            messages.append(Message("system", self.system))
        elif isinstance(self.system, list) and self.system:
            messages.append(Message("system", "".join(b.to_text(f"system.{j}") for j, b in enumerate(self.system))))
        messages += [m.to_message(f"messages.{i}") for i, m in enumerate(self.messages)]
        return messages

    def to_request(self) -> Request:
        """The engine request; raises InvalidRequest naming the field."""
        self.check_supported()
        if self.max_tokens is None:
            raise InvalidRequest("max_tokens: Field required", param="max_tokens")
        constraint = None
        if self.output_config is not None and self.output_config.format is not None:
            constraint = Constraint("json_schema", schema=self.output_config.format.schema_)
        params = GenerationParams(
            max_new_tokens=self.max_tokens,
            temperature=ANTHROPIC_DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            stop=list(self.stop_sequences or []),
            constraint=constraint,
        ).validated()
        return Request(messages=self.to_messages(), params=params)


# -- answers ------------------------------------------------------------------------------------
StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class OutputText(BaseModel):
    type: Literal["text"] = "text"
    text: str


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorDetail
