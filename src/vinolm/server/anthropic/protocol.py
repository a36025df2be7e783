"""The Anthropic Messages wire format (``POST /v1/messages``) as pydantic models.

Field names are Anthropic's, verbatim, so the ``anthropic`` SDK works unchanged. Types are
strict and ranges checked here, so a bad request is a 400 in Anthropic's error shape before
anything is queued. Fields vinolm does not act on are a 400 naming them, except the few
that change nothing for a local server (:data:`INERT`). The request owns its translation
to :mod:`vinolm.types`.

Tool use maps onto vinolm's one tool model: ``tools`` (``input_schema``) are offered through
the model's chat template, ``tool_choice`` auto / any / tool / none is OpenAI's auto /
required / named / none (``any`` and ``tool`` are enforced while sampling), an assistant's
``tool_use`` blocks are its tool calls and a user's ``tool_result`` blocks are tool turns.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.server.answer import ANY, refuse_unsupported, tool_plan, with_tools
from vinolm.server.openai.structured import ToolPlan, unique_tools
from vinolm.types import Constraint, GenerationParams, Message, Request, Tool, ToolCall, check_text

API = "Anthropic Messages API"
ANTHROPIC_DEFAULT_TEMPERATURE = 1.0

#: Fields that change nothing here, with the values accepted as no-ops (null and empty too).
INERT: dict[str, tuple[Any, ...]] = {
    "service_tier": ("auto", "standard_only"),
    "thinking": ({"type": "disabled"},),
    "cache_control": (),
    "container": (), "mcp_servers": (), "context_management": (), "inference_geo": (),
    "speed": ("standard",), "user_profile_id": (), "workspace_id": (), "diagnostics": (),
}
#: A block echoed from the SDK's response objects (``response.content``, ``model_dump()``)
#: carries every field of its type, null where unset: null is absent, a value is refused.
_BLOCK_INERT: dict[str, tuple[Any, ...] | None] = {"cache_control": (), "citations": (), "caller": ANY,
                                                   "toolset_name": ()}
#: A tool's optional fields as the SDK sends them, accepted at their defaults only.
_TOOL_INERT: dict[str, tuple[Any, ...] | None] = {
    "cache_control": (), "defer_loading": (False,), "eager_input_streaming": (False,), "input_examples": (),
    "allowed_callers": (),
}

#: Anthropic's error ``type`` per HTTP status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}`` for any failure."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")


#: Each block type's own fields (the model holds all of them): another type's is a 400, not ignored.
_BLOCK_FIELDS = {"text": ("text",), "tool_use": ("id", "name", "input"),
                 "tool_result": ("tool_use_id", "content", "is_error")}


class TextBlock(_Wire):
    """Any content block: ``text``, an assistant's ``tool_use`` or a user's ``tool_result``;
    other types (images, documents, thinking, ...) are a 400 naming the block."""

    type: str
    text: str | None = None
    id: str | None = Field(None, description="tool_use: the call's id, which its tool_result names.")
    name: str | None = Field(None, description="tool_use: the tool called.")
    input: dict[str, Any] | None = Field(None, description="tool_use: the call's arguments.")
    tool_use_id: str | None = Field(None, description="tool_result: the tool_use block it answers.")
    content: str | list[TextBlock] | None = Field(None, description="tool_result: the result, as text or text blocks.")
    is_error: bool | None = Field(None, description="tool_result: accepted; the result text says what went wrong.")

    def kind(self, where: str) -> str:
        if self.type not in _BLOCK_FIELDS:
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves text, tool_use and "
                                 "tool_result blocks", param=f"{where}.type")
        refuse_unsupported(self.model_extra or {}, _BLOCK_INERT, API, f"{where}.")
        stray = next((name for fields in _BLOCK_FIELDS.values() for name in fields
                      if getattr(self, name) is not None and name not in _BLOCK_FIELDS[self.type]), None)
        if stray is not None:
            raise InvalidRequest(f"{where}.{stray} is not a field of a {self.type} block", param=f"{where}.{stray}")
        return self.type

    def to_text(self, where: str) -> str:
        if self.kind(where) == "text" and self.text is None:
            raise InvalidRequest(f"{where}.text: Field required", param=f"{where}.text")
        if self.kind(where) != "text":
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported here: only text blocks",
                                 param=f"{where}.type")
        return check_text(self.text, f"{where}.text")

    def to_call(self, where: str) -> ToolCall:
        if self.id is None or self.name is None:
            missing = "id" if self.id is None else "name"
            raise InvalidRequest(f"{where}.{missing}: Field required", param=f"{where}.{missing}")
        try:
            return ToolCall(self.id, self.name, json.dumps(self.input or {}))
        except VinolmError as exc:
            exc.param = where
            raise

    def to_result(self, where: str) -> Message:
        if self.tool_use_id is None:
            raise InvalidRequest(f"{where}.tool_use_id: Field required", param=f"{where}.tool_use_id")
        content = self.content or ""
        text = check_text(content, f"{where}.content") if isinstance(content, str) else "".join(
            b.to_text(f"{where}.content.{j}") for j, b in enumerate(content))
        return Message("tool", text, tool_call_id=self.tool_use_id)


class InputMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[TextBlock]

    def to_messages(self, where: str) -> list[Message]:
        """One turn, or for a user turn with tool results one tool turn per result first."""
        refuse_unsupported(self.model_extra or {}, {}, API, f"{where}.")
        if isinstance(self.content, str):
            return [Message(self.role, check_text(self.content, f"{where}.content"))]
        texts: list[str] = []
        calls: list[ToolCall] = []
        results: list[Message] = []
        for j, block in enumerate(self.content):
            at = f"{where}.content.{j}"
            kind = block.kind(at)
            if kind != "text" and (kind == "tool_use") != (self.role == "assistant"):
                raise InvalidRequest(f"{at}: a {kind} block belongs in "
                                     f"{'an assistant' if kind == 'tool_use' else 'a user'} message",
                                     param=f"{at}.type")
            if kind == "text":
                texts.append(block.to_text(at))
            elif kind == "tool_use":
                calls.append(block.to_call(at))
            else:
                results.append(block.to_result(at))
        text = "".join(texts)
        if self.role == "assistant":
            return [Message("assistant", text, tool_calls=calls)]
        return results + ([Message("user", text)] if text or not results else [])


class ToolParam(_Wire):
    """A client tool: ``input_schema`` is the JSON Schema of its input. Server tools (web
    search, code execution, ...) have a ``type`` and are a 400."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    strict: bool | None = Field(None, description="The input follows the schema exactly when the call is forced "
                                                  "(tool_choice any or tool), whatever this says.")

    def to_tool(self, where: str) -> Tool:
        refuse_unsupported(self.model_extra or {}, _TOOL_INERT, API, f"{where}.")
        try:
            return Tool(self.name, self.description or "", self.input_schema)
        except VinolmError as exc:
            exc.param = where
            raise


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, description="type tool: the tool that must be called.")
    disable_parallel_tool_use: bool | None = Field(None, description="true: at most one call (any, auto).")


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
    stream: bool | None = Field(None, description="true: server-sent events; false or null: one JSON answer.")
    tools: list[ToolParam] | None = Field(None, description="Client tools the model may call.")
    tool_choice: ToolChoice | None = Field(None, description="auto (default with tools), any, tool (named) or none.")
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
        if self.tool_choice is not None:
            refuse_unsupported(self.tool_choice.model_extra or {}, {}, API, "tool_choice.")

    def tool_plan(self) -> ToolPlan:
        """Anthropic's choice as vinolm's: any = required, tool = named; with tools and no
        choice, auto (as Anthropic does)."""
        tools = unique_tools([t.to_tool(f"tools.{i}") for i, t in enumerate(self.tools or [])])
        choice = self.tool_choice or ToolChoice(type="auto" if tools else "none")
        if choice.type == "tool" and choice.name is None:
            raise InvalidRequest("tool_choice.name: Field required with type tool", param="tool_choice.name")
        mode = {"auto": "auto", "any": "required", "tool": "named", "none": "none"}[choice.type]
        return tool_plan(tools, mode, choice.name, parallel=not choice.disable_parallel_tool_use)  # type: ignore[arg-type]

    def to_messages(self, plan: ToolPlan | None = None) -> list[Message]:
        messages = []
        if isinstance(self.system, str) and self.system:
            messages.append(Message("system", check_text(self.system, "system")))
        elif isinstance(self.system, list) and self.system:
            messages.append(Message("system", "".join(b.to_text(f"system.{j}") for j, b in enumerate(self.system))))
        for i, m in enumerate(self.messages):
            messages += m.to_messages(f"messages.{i}")
        return with_tools(messages, plan or self.tool_plan())

    def to_request(self, plan: ToolPlan) -> Request:
        """The engine request; raises InvalidRequest naming the field."""
        self.check_supported()
        if self.max_tokens is None:
            raise InvalidRequest("max_tokens: Field required", param="max_tokens")
        constraint = plan.constraint()
        if self.output_config is not None and self.output_config.format is not None:
            if constraint is not None:
                raise InvalidRequest("output_config.format cannot be combined with a forced tool_choice "
                                     "(any or tool)", param="output_config.format")
            constraint = Constraint("json_schema", schema=self.output_config.format.schema_)
        params = GenerationParams(
            max_new_tokens=self.max_tokens,
            temperature=ANTHROPIC_DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            stop=list(self.stop_sequences or []),
            constraint=constraint,
        ).validated()
        return Request(messages=self.to_messages(plan), params=params)


# -- answers ------------------------------------------------------------------------------------
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class OutputText(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUse(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText | ToolUse]
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
