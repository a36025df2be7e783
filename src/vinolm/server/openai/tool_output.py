"""One chat choice's generated text -> OpenAI content and ``tool_calls``, unary or streamed.

With ``tool_choice`` required or named the answer is constrained JSON, held until it ends
and then read as calls (``forced_calls``). With ``auto`` the model's native call format is
recognised as the text arrives (``CallParser``), releasing ordinary text at once. Without
tools the text passes through untouched.
"""

from __future__ import annotations

from vinolm.prompts.tools import CallParser, Parsed, forced_calls, new_call_id
from vinolm.server.openai.protocol import FunctionCall, ToolCallOut, ToolPlan


class ToolOutput:
    def __init__(self, plan: ToolPlan, tool_format: str) -> None:
        self.plan = plan
        self._forced = plan.mode in ("required", "named")
        self._parser = CallParser(tool_format, [t.name for t in plan.tools]) if plan.mode == "auto" else None
        self._held: list[str] = []
        #: Every call found so far, in order; its position is the call's stream ``index``.
        self.calls: list[ToolCallOut] = []

    def feed(self, text: str) -> tuple[str, list[ToolCallOut]]:
        """Text that may be shown now, and the calls that completed with this piece."""
        if self._forced:
            self._held.append(text)
            return "", []
        if self._parser is None:
            return text, []
        return self._found(self._parser.feed(text))

    def finish(self) -> tuple[str, list[ToolCallOut]]:
        """The rest, once generation ended: held text, or the calls it turned out to be."""
        if self._forced:
            text = "".join(self._held)
            calls = forced_calls(text, self.plan.named)
            return ("", self._new(calls)) if calls else (text, [])
        if self._parser is None:
            return "", []
        return self._found(self._parser.finish())

    def _found(self, parsed: Parsed) -> tuple[str, list[ToolCallOut]]:
        return parsed.content, self._new(parsed.calls)

    def _new(self, calls: list[tuple[str, str]]) -> list[ToolCallOut]:
        made = [ToolCallOut(id=new_call_id(), function=FunctionCall(name=name, arguments=arguments))
                for name, arguments in calls]
        self.calls += made
        return made
