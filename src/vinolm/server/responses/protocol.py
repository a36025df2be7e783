"""The OpenAI Responses wire format (``POST /v1/responses``) as pydantic models.

vinolm keeps no state: every request carries the whole conversation in ``input``, nothing
is stored (``store`` is false; ``previous_response_id`` and ``conversation`` are a 400, and
``GET /v1/responses/{id}`` a 404). Field names are OpenAI's, verbatim, so ``openai``'s
``client.responses.create`` and the OpenAI Agents SDK work unchanged. Fields vinolm does
not act on are a 400 naming them (code ``unsupported_parameter``), except the few that
change nothing for a local server (:data:`INERT`). The request owns its translation to
:mod:`vinolm.types`; errors use OpenAI's shape, as in the chat API.

Function tools are vinolm's one tool model: ``tools`` of type ``function`` are offered
through the model's chat template, ``tool_choice`` auto / required / none / a named
function (required and named enforced while sampling), ``function_call`` input items are
the assistant's calls and ``function_call_output`` items their results.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.server.answer import ANY, refuse_unsupported, tool_plan, with_tools
from vinolm.server.openai.structured import ToolPlan, unique_tools
from vinolm.types import Constraint, GenerationParams, Message, Request, Tool, ToolCall, check_text

API = "Responses API"
OPENAI_DEFAULT_TEMPERATURE = 1.0

#: Top-level fields that change nothing here, with the values accepted as no-ops.
INERT: dict[str, tuple[Any, ...]] = {
    "include": (),
    "truncation": ("disabled",), "service_tier": ("auto", "default"), "reasoning": (),
    "top_logprobs": (0,), "background": (False,), "max_tool_calls": (), "prompt": (),
    "stream_options": ({"include_obfuscation": False}, {"include_obfuscation": True}),
    "prompt_cache_retention": (), "context_management": (),
}
#: What input message items and their parts may carry besides role / content / text: the
#: bookkeeping fields an assistant item has when a client sends a previous answer back.
_ITEM_INERT: dict[str, tuple[Any, ...] | None] = {"id": ANY, "status": ("completed", "incomplete", "in_progress"),
                                                 "phase": ANY}
_PART_INERT: dict[str, tuple[Any, ...]] = {"annotations": (), "logprobs": ()}
_TEXT_PARTS = ("input_text", "output_text")


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow", populate_by_name=True)


class ContentPart(_Wire):
    type: str
    text: str | None = None

    def to_text(self, where: str) -> str:
        if self.type not in _TEXT_PARTS or self.text is None:
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves input_text "
                                 "and output_text parts only", param=f"{where}.type")
        refuse_unsupported(self.model_extra or {}, _PART_INERT, API, f"{where}.")
        return check_text(self.text, f"{where}.text")


#: Each item type's own fields (the model holds all of them): another type's is a 400, not ignored.
_ITEM_FIELDS = {"message": ("role", "content"), "function_call": ("call_id", "name", "arguments"),
                "function_call_output": ("call_id", "output")}


class InputItem(_Wire):
    """A message, a ``function_call`` the assistant made or a ``function_call_output``;
    other item types (reasoning, web search calls, ...) are a 400 naming them."""

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = Field(None, description="function_call / function_call_output: the call's id.")
    name: str | None = Field(None, description="function_call: the function called.")
    arguments: str | None = Field(None, description="function_call: its arguments as JSON text.")
    output: str | None = Field(None, description="function_call_output: the call's result.")

    def to_message(self, where: str) -> Message:
        if self.type not in _ITEM_FIELDS:
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves message, "
                                 "function_call and function_call_output items", param=f"{where}.type")
        stray = next((name for name in ("role", "content", "call_id", "name", "arguments", "output")
                      if getattr(self, name) is not None and name not in _ITEM_FIELDS[self.type]), None)
        if stray is not None:
            raise InvalidRequest(f"{where}.{stray} is not a field of a {self.type} item", param=f"{where}.{stray}")
        if self.type != "message":
            return self._tool_turn(where)
        if self.role is None or self.content is None:
            missing = "role" if self.role is None else "content"
            raise InvalidRequest(f"{where}.{missing}: Field required", param=f"{where}.{missing}")
        refuse_unsupported(self.model_extra or {}, _ITEM_INERT, API, f"{where}.")
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return Message(role, check_text(self.content, f"{where}.content"))
        return Message(role, "".join(p.to_text(f"{where}.content.{j}") for j, p in enumerate(self.content)))

    def _tool_turn(self, where: str) -> Message:
        """A function_call as an assistant turn with that call, an output as a tool turn."""
        needed = ("call_id", "name", "arguments") if self.type == "function_call" else ("call_id", "output")
        for name in needed:
            if getattr(self, name) is None:
                raise InvalidRequest(f"{where}.{name}: Field required", param=f"{where}.{name}")
        refuse_unsupported(self.model_extra or {}, _ITEM_INERT, API, f"{where}.")
        assert self.call_id is not None
        if self.type == "function_call_output":
            return Message("tool", check_text(self.output or "", f"{where}.output"), tool_call_id=self.call_id)
        try:
            return Message("assistant", "", tool_calls=[ToolCall(self.call_id, self.name or "", self.arguments or "")])
        except VinolmError as exc:
            exc.param = f"{where}.arguments" if "arguments" in exc.message else f"{where}.name"
            raise


class FunctionTool(_Wire):
    """A ``function`` tool; other tool types (web_search, file_search, ...) are a 400."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = Field(None, description="Arguments follow the schema exactly when the call is forced "
                                                  "(tool_choice required or named), whatever this says.")

    def to_tool(self, where: str) -> Tool:
        if self.type != "function":
            raise InvalidRequest(f"{where}.type {self.type!r} is not supported: vinolm serves function tools",
                                 param=f"{where}.type")
        if self.name is None:
            raise InvalidRequest(f"{where}.name: Field required", param=f"{where}.name")
        refuse_unsupported(self.model_extra or {}, {}, API, f"{where}.")
        try:
            return Tool(self.name, self.description or "", self.parameters or {"type": "object", "properties": {}})
        except VinolmError as exc:
            exc.param = where
            raise


class NamedFunction(_Wire):
    type: Literal["function"]
    name: str


class TextFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = Field(None, description="Always enforced while sampling; true and false alike.")
    description: str | None = None

    def to_constraint(self) -> Constraint | None:
        if self.type != "json_schema":
            stray = next((name for name in ("name", "schema_", "strict", "description")
                          if getattr(self, name) is not None), None)
            if stray is not None:
                field = stray.rstrip("_")
                raise InvalidRequest(f"text.format.{field} goes with type json_schema, not {self.type!r}",
                                     param=f"text.format.{field}")
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
    tools: list[FunctionTool] | None = Field(None, description="Functions the model may call (type function).")
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = Field(
        None, description="none | auto (the default with tools) | required | {type: function, name}.")
    parallel_tool_calls: bool | None = Field(None, description="With tool_choice required: allow several calls.")
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

    def tool_plan(self) -> ToolPlan:
        tools = unique_tools([t.to_tool(f"tools.{i}") for i, t in enumerate(self.tools or [])])
        choice = self.tool_choice
        if isinstance(choice, NamedFunction):
            return tool_plan(tools, "named", choice.name)
        return tool_plan(tools, choice or ("auto" if tools else "none"), parallel=self.parallel_tool_calls is not False)

    def to_messages(self, plan: ToolPlan) -> list[Message]:
        messages = [Message("system", check_text(self.instructions, "instructions"))] if self.instructions else []
        if isinstance(self.input, str):
            return with_tools([*messages, Message("user", check_text(self.input, "input"))], plan)
        if not self.input:
            raise InvalidRequest("input is an empty list", param="input")
        items = [item.to_message(f"input.{i}") for i, item in enumerate(self.input)]
        return with_tools(messages + _merge_calls(items, len(messages)), plan)

    def to_request(self, max_tokens_limit: int, plan: ToolPlan) -> Request:
        """The engine request; raises InvalidRequest naming the field."""
        self.check_supported()
        fmt = self.text.format if self.text is not None else None
        constraint = fmt.to_constraint() if fmt is not None else None
        if constraint is not None and plan.constraint() is not None:
            raise InvalidRequest("text.format cannot be combined with tool_choice required or a named function",
                                 param="text.format")
        params = GenerationParams(
            max_new_tokens=self.max_output_tokens or max_tokens_limit,
            temperature=OPENAI_DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            constraint=constraint or plan.constraint(),
        ).validated()
        return Request(messages=self.to_messages(plan), params=params)


def _merge_calls(items: list[Message], offset: int) -> list[Message]:
    """Consecutive function_call items are one assistant turn with several calls (as the
    chat templates expect); a function_call_output must answer an earlier call."""
    merged: list[Message] = []
    called: set[str] = set()
    for i, item in enumerate(items):
        if item.role == "tool" and item.tool_call_id not in called:
            raise InvalidRequest(f"input.{i} answers call_id {item.tool_call_id!r}, which no earlier function_call "
                                 "item made; send that function_call item first", param=f"input.{i}.call_id")
        called.update(call.id for call in item.tool_calls)
        last = merged[-1] if merged else None
        if item.tool_calls and last is not None and last.role == "assistant" and last.tool_calls:
            merged[-1] = Message("assistant", last.content, tool_calls=[*last.tool_calls, *item.tool_calls])
        elif item.tool_calls and last is not None and last.role == "assistant" and not last.tool_calls:
            merged[-1] = Message("assistant", last.content, tool_calls=list(item.tool_calls))  # text, then its calls
        else:
            merged.append(item)
    return merged


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


class FunctionCallItem(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"


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
    output: list[OutputMessage | FunctionCallItem] = Field(default_factory=list)
    incomplete_details: IncompleteDetails | None = None
    error: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool = True
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    store: bool = False
    previous_response_id: None = None
    truncation: str = "disabled"
    metadata: dict[str, str] = Field(default_factory=dict)
    usage: ResponseUsage | None = None
