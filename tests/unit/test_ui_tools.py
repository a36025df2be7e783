"""The chat page's tool logic without a browser or a model: the editor's JSON, the tool
choice, the conversation in OpenAI's shape, and the request built from them."""

from __future__ import annotations

import json

import pytest

from vinolm.errors import InvalidRequest
from vinolm.server.openai.protocol import FunctionCall, ToolCallOut
from vinolm.types import GenerationParams
from vinolm.ui.tools import (
    EXAMPLE_TOOLS,
    after_result,
    assistant_turn,
    chat_request,
    explain,
    offered_tools,
    parse_tools,
    pending_calls,
    pretty_arguments,
    tool_plan,
)

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_the_example_tools_are_offered_and_an_empty_editor_offers_none() -> None:
    assert offered_tools(EXAMPLE_TOOLS) == ["get_weather"]
    assert parse_tools("") is None and parse_tools(None) is None and offered_tools("  ") == []


@pytest.mark.parametrize(("text", "said"), [
    ('[{"type": "function",}]', "does not parse: Expecting property name enclosed in double quotes (line 1, column 22)"),
    ('{"type": "function"}', "must be a list of function tools"),
    ('[{"type": "function", "function": {"description": "x"}}]', "tools.0.function.name: Field required"),
    ('[{"type": "function", "function": {"name": "bad name"}}]', "tools.0.function: tool name 'bad name'"),
])
def test_invalid_tools_are_named(text: str, said: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        offered_tools(text)
    assert said in explain(caught.value)


def test_a_named_choice_forces_that_tools_arguments() -> None:
    history = [{"role": "user", "content": "Weather in Paris?"}]
    body = chat_request(history, EXAMPLE_TOOLS, "function:get_weather", GenerationParams(temperature=0.0))
    plan = tool_plan(body, None)
    assert plan.mode == "named" and plan.named == "get_weather" and plan.tool_format == "hermes"
    request = body.to_request(256, plan)
    assert request.params.constraint is not None and request.params.constraint.kind == "json_schema"
    assert request.messages is not None and request.messages[0].tools[0].name == "get_weather"


def test_after_a_tool_result_a_forced_choice_becomes_auto() -> None:
    assert [after_result(c) for c in ("required", "function:get_weather", "auto", "none")] == \
        ["auto", "auto", "auto", "none"]
    history = [{"role": "user", "content": "Weather in Paris?"}, assistant_turn("", [_out()]),
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
    body = chat_request(history, EXAMPLE_TOOLS, "required", GenerationParams())
    assert body.tool_plan().mode == "auto"


def test_a_named_choice_of_a_tool_not_offered_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="tool_choice names 'get_time'"):
        chat_request([{"role": "user", "content": "?"}], EXAMPLE_TOOLS, "function:get_time",
                     GenerationParams()).tool_plan()


def test_pending_calls_are_the_last_answers_calls_without_a_result() -> None:
    second = {**CALL, "id": "call_2"}
    answer = {"role": "assistant", "content": None, "tool_calls": [CALL, second]}
    history = [{"role": "user", "content": "?"}, answer]
    assert pending_calls(history) == [CALL, second]
    history.append({"role": "tool", "tool_call_id": "call_1", "content": "18 C"})
    assert pending_calls(history) == [second]
    history.append({"role": "tool", "tool_call_id": "call_2", "content": "sunny"})
    assert pending_calls(history) == []
    assert pending_calls([{"role": "user", "content": "?"}]) == []


def test_an_answer_with_calls_is_an_openai_assistant_message() -> None:
    turn = assistant_turn("", [_out()])
    assert turn == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert assistant_turn("Hello", []) == {"role": "assistant", "content": "Hello"}
    assert pretty_arguments('{"city":"Paris"}') == json.dumps({"city": "Paris"}, indent=2)
    assert pretty_arguments("{half") == "{half"


def _out() -> ToolCallOut:
    return ToolCallOut(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
