"""Tool calling on the chat page: the conversation as an OpenAI chat request, calls shown as calls.

The page keeps its conversation in the OpenAI message shape (``tool_calls`` on assistant
turns, ``tool`` turns with ``tool_call_id``) and turns it, with the tools editor's JSON and
the tool-choice selector, into the very :class:`ChatCompletionRequest` the OpenAI server
parses. So the page takes the server's path with no copy of it: the same validation and
error messages, the same :class:`ToolPlan` (``required`` and named choices forced by a JSON
schema, so even a tiny model returns a valid call) and the same :class:`ToolOutput` reading
the answer back into calls. Nothing here touches Gradio or a model.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import ValidationError

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.prompts.spec import DEFAULT_TOOL_FORMAT
from vinolm.server.openai.protocol import ChatCompletionRequest, ToolCallOut
from vinolm.server.openai.structured import ToolPlan
from vinolm.server.openai.tool_output import ToolOutput
from vinolm.types import GenerationParams

Turn = dict[str, Any]  # one OpenAI chat message: role, content, and tool_calls / tool_call_id
#: The selector's fixed choices; each offered tool adds ``NAMED + name``.
CHOICES = ("auto", "required", "none")
NAMED = "function:"
EXAMPLE_TOOLS = json.dumps([{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}], indent=2)


def parse_tools(text: str | None) -> list[Any] | None:
    """The editor's text as a JSON list (None when it is empty: no tools offered)."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidRequest(f"the tools JSON does not parse: {reason}{where}", param="tools") from None
    if not isinstance(value, list):
        raise InvalidRequest('the tools JSON must be a list of function tools: [{"type": "function", '
                             '"function": {"name": ..., "parameters": {...}}}]', param="tools")
    return value


def explain(exc: VinolmError) -> str:
    """An error as the page shows it: its message, led by the field it is about if it does not say."""
    param = getattr(exc, "param", None)
    return f"{param}: {exc.message}" if param and param not in exc.message else exc.message


def choice_of(choice: str) -> str | dict[str, Any]:
    """The selector's value as OpenAI's ``tool_choice``."""
    if choice.startswith(NAMED):
        return {"type": "function", "function": {"name": choice.removeprefix(NAMED)}}
    return choice


def after_result(choice: str) -> str:
    """The choice for the answer that follows a tool result: a forced call (required or a
    named function) becomes auto, as the OpenAI Agents SDK resets ``tool_choice``, or the
    model would be forced to call again and again instead of answering."""
    return "auto" if choice == "required" or choice.startswith(NAMED) else choice


def chat_request(history: list[Turn], tools_text: str | None, choice: str | None,
                 params: GenerationParams) -> ChatCompletionRequest:
    """The conversation and the page's settings as an OpenAI chat request, checked as the
    server checks one; every problem is an InvalidRequest naming the field."""
    body: dict[str, Any] = {"messages": history, "max_tokens": params.max_new_tokens,
                            "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
                            "repetition_penalty": params.repetition_penalty}
    tools = parse_tools(tools_text)
    choice = choice or "auto"
    if tools:
        body["tools"] = tools
        body["tool_choice"] = choice_of(after_result(choice) if history and history[-1]["role"] == "tool" else choice)
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        from vinolm.server.app import describe_validation_errors

        message, param = describe_validation_errors(exc.errors())  # type: ignore[arg-type]
        raise InvalidRequest(message, param=param) from None
    request.check_supported()
    return request


def offered_tools(tools_text: str | None) -> list[str]:
    """The names of the editor's tools, checked as a request's ``tools`` are."""
    probe = [{"role": "user", "content": "?"}]
    return [tool.name for tool in chat_request(probe, tools_text, "auto", GenerationParams()).tool_plan().tools]


def tool_plan(body: ChatCompletionRequest, chat_spec: Any) -> ToolPlan:
    """The request's plan in the served model's call format, as the OpenAI server makes it
    (``auto`` is then constrained to that family's calls once one starts)."""
    fmt = getattr(chat_spec, "tool_format", None) or DEFAULT_TOOL_FORMAT
    return dataclasses.replace(body.tool_plan(), tool_format=fmt)


def tool_output(plan: ToolPlan) -> ToolOutput:
    """What reads the answer back into content and calls."""
    return ToolOutput(plan, plan.tool_format or DEFAULT_TOOL_FORMAT)


def assistant_turn(content: str, calls: list[ToolCallOut]) -> Turn:
    """The answer as an OpenAI assistant message, calls and all, for the next request."""
    turn: Turn = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        turn["tool_calls"] = [call.model_dump() for call in calls]
    return turn


def pending_calls(history: list[Turn]) -> list[Turn]:
    """The last answer's calls that have no ``tool`` result yet, in order."""
    answered: set[str] = set()
    for turn in reversed(history):
        if turn["role"] == "tool":
            answered.add(turn["tool_call_id"])
        elif turn["role"] == "assistant":
            return [c for c in turn.get("tool_calls") or [] if c["id"] not in answered]
        else:
            break
    return []


def pretty_arguments(arguments: str) -> str:
    """A call's JSON arguments indented for reading (as they came if they do not parse)."""
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments
