"""Tool use in prompts: the tools and past calls into a model's input, its calls back out.

Into the prompt: a chat template that reads ``tools`` gets them natively (with the
assistant's ``tool_calls`` and the ``tool`` results as Hugging Face templates expect them).
Every other format gets the documented fallback of :func:`plain_conversation`: the tools
are described in the system message, with the call format of the model's family, past calls
are written back in that format and tool results become user turns, so any chat format
(and any engine) can carry a tool conversation.

Out of the answer: :class:`CallParser` recognises each family's native call format, fed
piece by piece while streaming (holding back text that may be the start of a call) or all
at once for a unary answer. Nothing here imports OpenVINO.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vinolm.errors import InvalidRequest
from vinolm.prompts.jinja import uses_variable
from vinolm.types import Constraint, Message, Tool, ToolCall

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_MARKER = "[TOOL_CALLS]"
LLAMA_PYTHON_TAG = "<|python_tag|>"

_HERMES_SYSTEM = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

_LLAMA_SYSTEM = """You have access to the following functions:

{tools}

To call a function, respond only with a JSON object of the form {{"name": function name, "parameters": dictionary of argument name and its value}}. Do not use variables."""

_MISTRAL_SYSTEM = """You have access to the following functions:

{tools}

To call functions, respond with [TOOL_CALLS] followed by a JSON list of calls: [TOOL_CALLS][{{"name": function name, "arguments": dictionary of argument name and its value}}]"""

_SYSTEM_TEXT = {"hermes": _HERMES_SYSTEM, "llama3_json": _LLAMA_SYSTEM, "mistral": _MISTRAL_SYSTEM}


@dataclass(frozen=True)
class CallFormat:
    """How a family writes its calls: ``opening`` + each call as ``item_open`` JSON
    ``item_close``, joined by ``separator``, + ``closing``. ``trigger`` is the text after
    which an answer is calls (free text may come before it); None means a call is the whole
    answer. The JSON of a call is ``{"name": ..., <arguments_key>: {...}}``. One description
    serves the history (:func:`format_calls`) and the ``tool_choice: auto`` grammar."""

    trigger: str | None
    opening: str = ""
    item_open: str = ""
    item_close: str = ""
    separator: str = ""
    closing: str = ""
    arguments_key: str = "arguments"

    def write(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> str:
        items = [self.item_open + json.dumps({"name": name, self.arguments_key: arguments}) + self.item_close
                 for name, arguments in calls]
        return self.opening + self.separator.join(items) + self.closing


CALL_FORMATS: dict[str, CallFormat] = {
    "hermes": CallFormat(HERMES_OPEN, item_open=HERMES_OPEN + "\n", item_close="\n" + HERMES_CLOSE, separator="\n"),
    "mistral": CallFormat(MISTRAL_MARKER, opening=MISTRAL_MARKER + "[", separator=", ", closing="]"),
    "llama3_json": CallFormat(None, separator="; ", arguments_key="parameters"),
}


def new_call_id() -> str:
    """OpenAI-style ids (``call_`` + 24 hex digits): unique, so results match their call."""
    return f"call_{uuid.uuid4().hex[:24]}"


# -- into the prompt ------------------------------------------------------------------------------
def has_tool_use(messages: Sequence[Message]) -> bool:
    return any(m.tools or m.tool_calls or m.role == "tool" for m in messages)


def check_tool_turns(messages: Sequence[Message]) -> None:
    """Every tool result answers a call the assistant made earlier in the conversation."""
    called: set[str] = set()
    for index, message in enumerate(messages):
        called.update(call.id for call in message.tool_calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise InvalidRequest(
                f"messages.{index} answers tool call {message.tool_call_id!r}, which no earlier assistant "
                "message made; send the assistant message with that tool_calls id first",
                param=f"messages.{index}.tool_call_id",
            )


def template_takes_tools(template: str | None) -> bool:
    return bool(template) and uses_variable(template, "tools")  # type: ignore[arg-type]


def native_variables(messages: Sequence[Message], default_system: str | None = None
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``messages`` and ``tools`` for a template that reads ``tools``.

    Hugging Face templates take a call's arguments as a mapping (they ``tojson`` it). A
    system message that only carried tools becomes ``default_system``, or none at all, so
    the template's own default system prompt applies.
    """
    tools = [tool.to_dict() for m in messages for tool in m.tools]
    rendered = []
    if messages[0].role != "system" and default_system is not None:
        rendered.append({"role": "system", "content": default_system})
    for message in messages:
        content = message.content or (default_system if message.tools else None) or ""
        if message.tools and not content:
            continue
        data: dict[str, Any] = {"role": message.role, "content": content}
        if message.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.parsed_arguments}}
                for c in message.tool_calls
            ]
        if message.tool_call_id is not None:
            data["tool_call_id"] = message.tool_call_id
        rendered.append(data)
    return rendered, tools


def plain_conversation(messages: Sequence[Message], fmt: str, default_system: str | None = None) -> list[Message]:
    """The fallback for formats that cannot express tools: only system, user and assistant turns.

    The system message gains a description of the tools and the call format (its own text,
    or ``default_system``, first); an assistant's calls are appended to its text in the
    model's format; consecutive tool results become one user turn, each result tagged with
    its call's name and id.
    """
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    result: list[Message] = []
    previous: Message | None = None
    for message in messages:
        if message.tools:
            head = message.content or default_system or ""
            text = _SYSTEM_TEXT[fmt].format(tools="\n".join(json.dumps(t.to_dict()) for t in message.tools))
            result.append(Message("system", f"{head}\n\n{text}" if head else text))
        elif message.tool_calls:
            calls = format_calls(message.tool_calls, fmt)
            result.append(Message("assistant", f"{message.content}\n{calls}" if message.content else calls))
        elif message.role == "tool":
            text = _format_result(message, names.get(message.tool_call_id or "", "?"), fmt)
            if previous is not None and previous.role == "tool":
                result[-1] = Message("user", f"{result[-1].content}\n{text}")
            else:
                result.append(Message("user", text))
        else:
            result.append(message)
        previous = message
    return result


def format_calls(calls: Sequence[ToolCall], fmt: str) -> str:
    """Calls as the model of family ``fmt`` writes them."""
    return CALL_FORMATS[fmt].write([(c.name, c.parsed_arguments) for c in calls])


def _format_result(message: Message, name: str, fmt: str) -> str:
    if fmt == "hermes":
        return f"<tool_response>\n{message.content}\n</tool_response>"
    return json.dumps({"tool_call_id": message.tool_call_id, "name": name, "content": message.content})


# -- forcing a call: the JSON schema a constrained answer follows ---------------------------------------
def arguments_schema(tool: Tool) -> dict[str, Any]:
    """The tool's parameters as a schema for an object (an empty ``{}`` means any object)."""
    return tool.parameters if "type" in tool.parameters else {"type": "object", **tool.parameters}


def calls_schema(tools: Sequence[Tool], parallel: bool, arguments_key: str = "arguments") -> dict[str, Any]:
    """``tool_choice: required``: one ``{"name", "arguments"}`` object, or with ``parallel``
    and several tools an array of 1 to ``len(tools)`` of them.

    Each alternative pins ``name`` to one tool and ``arguments`` to that tool's parameters,
    so whatever the model writes is a call some tool accepts. Calls are capped at one per
    tool because a small model, free to go on, repeats its call until max_tokens.
    ``arguments_key`` is the family's name for the arguments (Llama 3: ``parameters``).
    """
    options = [{"type": "object", "properties": {"name": {"type": "string", "enum": [t.name]},
                                                 arguments_key: arguments_schema(t)},
                "required": ["name", arguments_key], "additionalProperties": False} for t in tools]
    one = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "array", "items": one, "minItems": 1, "maxItems": len(tools)} if parallel and len(tools) > 1 else one


def auto_constraint(tools: Sequence[Tool], fmt: str, parallel: bool) -> Constraint:
    """``tool_choice: auto``: free text, or (once the model starts a call in its family's
    format) calls that :func:`calls_schema` accepts, so a call that starts is a valid one."""
    schema = calls_schema(tools, parallel, CALL_FORMATS[fmt].arguments_key)
    return Constraint("tool_calls", schema=schema, tool_format=fmt)


def forced_calls(text: str, named: str | None) -> list[tuple[str, str]]:
    """(name, arguments JSON) from a constrained answer: the arguments of ``named``, or the
    ``calls_schema`` object / array. An answer cut short by max_tokens gives no calls."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if named is not None:
        return [(named, json.dumps(value))] if isinstance(value, dict) else []
    items = value if isinstance(value, list) else [value]
    calls = [(item["name"], json.dumps(item["arguments"])) for item in items
             if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("arguments"), dict)]
    return list(dict.fromkeys(calls))  # the same call twice in one answer is one call


# -- out of the answer: each family's native call format ------------------------------------------------
@dataclass
class Parsed:
    """What a piece of answer turned into: text to show, and calls completed so far."""

    content: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)


class CallParser:
    """Recognises tool calls in an answer fed piece by piece (``feed``, then ``finish``).

    Text that cannot be part of a call is released at once; text that may be the start of
    one (a partial ``<tool_call>``, or for Llama 3 an answer that opens with ``{``) is held
    until it is decided. A call naming a tool that was not offered, or whose JSON does not
    parse, is given back as text: the model's words are never dropped.
    """

    def __init__(self, fmt: str, tool_names: Sequence[str]) -> None:
        self.fmt = fmt
        self.names = set(tool_names)
        self._buffer = ""
        self._holding = False  # llama3_json / mistral: a call has started, wait for the end
        self._no_call = False  # llama3_json: the answer opened with text, so it is no call

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        if self._no_call:
            content, self._buffer = self._buffer, ""
            return Parsed(content=content)
        if self.fmt == "hermes":
            return self._hermes()
        if self.fmt == "mistral":
            return self._release_until(MISTRAL_MARKER)
        return self._llama()

    def finish(self) -> Parsed:
        rest, self._buffer = self._buffer, ""
        if self._no_call:
            return Parsed(content=rest)
        if self.fmt == "hermes":
            body = rest.removeprefix(HERMES_OPEN) if rest.startswith(HERMES_OPEN) else None
            calls = self._objects(body) if body is not None else None
        elif self.fmt == "mistral":
            calls = self._objects(rest.removeprefix(MISTRAL_MARKER)) if rest.startswith(MISTRAL_MARKER) else None
        else:
            calls = self._objects(rest.strip().removeprefix(LLAMA_PYTHON_TAG), separator=";")
        return Parsed(calls=calls) if calls else Parsed(content=rest)

    # -- formats --------------------------------------------------------------------------------
    def _hermes(self) -> Parsed:
        out = Parsed()
        while True:
            start = self._buffer.find(HERMES_OPEN)
            if start < 0:
                keep = _partial_suffix(self._buffer, HERMES_OPEN)
                out.content += self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return out
            out.content += self._buffer[:start]
            self._buffer = self._buffer[start:]
            end = self._buffer.find(HERMES_CLOSE)
            if end < 0:
                return out
            block = self._buffer[: end + len(HERMES_CLOSE)]
            self._buffer = self._buffer[end + len(HERMES_CLOSE) :]
            calls = self._objects(block[len(HERMES_OPEN) : -len(HERMES_CLOSE)])
            if calls:
                out.calls += calls
            else:
                out.content += block

    def _release_until(self, marker: str) -> Parsed:
        if self._holding:
            return Parsed()
        start = self._buffer.find(marker)
        if start >= 0:
            self._holding = True
            content, self._buffer = self._buffer[:start], self._buffer[start:]
            return Parsed(content=content)
        keep = _partial_suffix(self._buffer, marker)
        content, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
        return Parsed(content=content)

    def _llama(self) -> Parsed:
        """A Llama 3 call is the whole answer, so the first visible character decides."""
        if self._holding:
            return Parsed()
        head = self._buffer.lstrip()
        if not head or LLAMA_PYTHON_TAG.startswith(head):
            return Parsed()
        if head.startswith(("{", LLAMA_PYTHON_TAG)):
            self._holding = True
            return Parsed()
        content, self._buffer = self._buffer, ""
        self._no_call = True
        return Parsed(content=content)

    def _objects(self, text: str, separator: str = "") -> list[tuple[str, str]] | None:
        """Calls from a JSON object, a list of them, or (Llama) objects joined by ``;``; None
        unless the whole text is calls to offered tools."""
        decoder = json.JSONDecoder()
        values: list[Any] = []
        position, text = 0, text.strip()
        while position < len(text):
            try:
                value, position = decoder.raw_decode(text, position)
            except ValueError:
                return None
            values.extend(value if isinstance(value, list) else [value])
            rest = text[position:].lstrip()
            if separator and rest.startswith(separator):
                rest = rest[len(separator) :].lstrip()
            position = len(text) - len(rest)
        calls = [_call_of(v) for v in values]
        if not calls or any(c is None or c[0] not in self.names for c in calls):
            return None
        return calls  # type: ignore[return-value]


def _call_of(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return (value["name"], json.dumps(arguments)) if isinstance(arguments, dict) else None


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
