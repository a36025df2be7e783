"""One answer per request, the way the Responses, Ollama and Anthropic layers serve it.

Those APIs ask for one sequence per request, so an HTTP request is one ModelService
ticket. What they share lives here: admission, the client-disconnect watch (the OpenAI
layer's ``MergedStream``, so cancellation takes the one path that is already tested), the
answer accumulated from its chunks and why it ended, and the check that turns a request
field vinolm does not implement into a 400 instead of silently ignoring it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from fastapi import Request as HTTPRequest

from vinolm.errors import InvalidRequest
from vinolm.prompts.spec import DEFAULT_TOOL_FORMAT
from vinolm.prompts.tools import check_tool_turns
from vinolm.server.openai.protocol import ToolCallOut
from vinolm.server.openai.serving import MergedStream, _unless_disconnected
from vinolm.server.openai.structured import ToolPlan
from vinolm.server.openai.tool_output import ToolOutput
from vinolm.server.service import ModelService
from vinolm.types import Chunk, Message, Metrics, Request, Tool

#: Values that ask for nothing: a client that sends them asks for the default behaviour.
_EMPTY: tuple[Any, ...] = (None, [], {}, "")
#: In a table of inert fields: every value of the field is accepted.
ANY = None


def refuse_unsupported(values: Mapping[str, Any], inert: Mapping[str, tuple[Any, ...] | None],
                       api: str, where: str = "") -> None:
    """400 naming the first field vinolm does not act on, unless it is a documented no-op.

    ``values`` are the fields a wire model did not declare (its ``model_extra``); ``inert``
    maps the ones that change nothing here to the values accepted as "the default" (besides
    null and empty), which real clients send all the time (``"tools": []``, ``"include": []``),
    or to :data:`ANY` for a label any value of which changes nothing (an item's ``id``).
    Anything else is refused by name rather than silently ignored.
    """
    for name, value in values.items():
        accepted = inert.get(name, ())
        if name not in inert or (accepted is not ANY and value not in _EMPTY and value not in accepted):
            param = f"{where}{name}"
            shown = "" if name not in inert else f" (got {_short(value)})"
            raise InvalidRequest(f"{param} is not supported by vinolm's {api}{shown}", param=param,
                                 code="unsupported_parameter")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def tool_plan(tools: Sequence[Tool], mode: Literal["none", "auto", "required", "named"], named: str | None = None,
              parallel: bool = True, param: str = "tool_choice") -> ToolPlan:
    """What a request's tools and choice ask of the answer (see ToolPlan), checked: a named
    tool must be offered, and any choice but none needs tools. ``param`` names the field."""
    if mode == "named":
        if named not in {t.name for t in tools}:
            offered = ", ".join(t.name for t in tools) or "none"
            raise InvalidRequest(f"{param} names {named!r}, which is not in tools (offered: {offered})", param=param)
        return ToolPlan(tuple(tools), "named", named, parallel=False)
    if mode != "none" and not tools:
        raise InvalidRequest(f"{param} {mode!r} needs tools", param=param)
    return ToolPlan(tuple(tools), mode, parallel=parallel) if mode != "none" and tools else ToolPlan()


def with_tools(messages: list[Message], plan: ToolPlan) -> list[Message]:
    """The conversation checked for tool turns, and the offered tools on its first system
    message (a new, empty one if there is none), where every chat format reads them."""
    check_tool_turns(messages)  # the engine checks again; here it is a 400 before anything is queued
    if not plan.offered:
        return messages
    if messages and messages[0].role == "system":
        return [Message("system", messages[0].content, tools=list(plan.tools)), *messages[1:]]
    return [Message("system", "", tools=list(plan.tools)), *messages]


class Answer:
    """One admitted request, its chunks as they come, and how it ended.

    ``start`` waits for the first chunk (so an error the engine finds at once is still an
    HTTP 4xx); ``pieces`` yields the answer as content text and completed tool calls (the
    OpenAI layer's :class:`ToolOutput`: a forced call is held until it ends, a native call
    in ``auto`` is recognised as it streams) and records both; ``complete`` runs a unary
    answer to its end. Either returns False when the client left, and the generation is
    cancelled then.
    """

    def __init__(self, service: ModelService, request: Request, protocol: str, tools: ToolPlan | None = None,
                 max_tokens: str = "max_tokens") -> None:
        """``max_tokens``: the API's name for the answer's length, named when it is over the limit."""
        self.service = service
        self.request = request
        self.created = int(time.time())
        plan = tools or ToolPlan()
        self.output = ToolOutput(plan, plan.tool_format or DEFAULT_TOOL_FORMAT)
        try:
            self._merged = MergedStream(service, [service.submit(request, protocol)])
        except InvalidRequest as exc:
            if exc.param == "max_tokens" and max_tokens != "max_tokens":
                exc.message = exc.message.replace("max_tokens", max_tokens, 1)
                exc.args, exc.param = (exc.message,), max_tokens
            raise
        self._parts: list[str] = []
        self._content: list[str] = []
        self._token_ids: list[int] = []
        self.finish_reason: str | None = None
        self._stop_sequence: tuple[str | None] | None = None

    async def start(self, raw: HTTPRequest) -> bool:
        return bool(await _unless_disconnected(raw, self._merged.prime(), self._merged.close))

    async def complete(self, raw: HTTPRequest) -> bool:
        async def run() -> bool:
            async for _ in self.pieces():
                pass
            return True

        return bool(await _unless_disconnected(raw, run(), self._merged.close))

    async def chunks(self) -> AsyncIterator[Chunk]:
        async for _, chunk in self._merged.events():
            self._parts.append(chunk.text)
            self._token_ids.extend(chunk.token_ids)
            if chunk.finish_reason:
                self.finish_reason = chunk.finish_reason
            yield chunk

    async def pieces(self) -> AsyncIterator[tuple[str, list[ToolCallOut]]]:
        """(content text, tool calls completed) as the answer grows; empty pieces are skipped."""
        async for chunk in self.chunks():
            text, calls = self.output.feed(chunk.text)
            if text or calls:
                self._content.append(text)
                yield text, calls
        text, calls = self.output.finish()
        if text or calls:
            self._content.append(text)
            yield text, calls

    def close(self) -> None:
        self._merged.close()

    @property
    def text(self) -> str:
        """Everything generated, calls included (what the engine's tokens spell)."""
        return "".join(self._parts)

    @property
    def content(self) -> str:
        """The answer without its tool calls (all of it when no tools were offered)."""
        return "".join(self._content)

    @property
    def calls(self) -> list[ToolCallOut]:
        return self.output.calls

    @property
    def metrics(self) -> Metrics:
        return self._merged.tickets[0].generation.metrics

    @property
    def hit_length(self) -> bool:
        return self.finish_reason == "length"

    def stop_sequence(self) -> str | None:
        """Which of the request's stop strings ended the answer; None for end of turn.

        Engines leave the stop string out of the text but keep the tokens that spelled it,
        so the decoded tokens run on past the text exactly by the stop string. An answer
        that ended at its end-of-turn token runs on by nothing (special tokens are skipped).
        """
        if self._stop_sequence is None:
            self._stop_sequence = (self._matched_stop(),)
        return self._stop_sequence[0]

    def _matched_stop(self) -> str | None:
        stops = self.request.params.stop
        if self.finish_reason != "stop" or not stops or not self._token_ids:
            return None
        decoded = self.service.engine.detokenize(self._token_ids, skip_special_tokens=True)
        text = self.text
        rest = decoded.removeprefix(text)
        starting = [s for s in stops if rest.startswith(s)]
        if starting:
            return max(starting, key=len)
        found = [(rest.find(s), s) for s in stops if s in rest]
        return min(found)[1] if found else None
