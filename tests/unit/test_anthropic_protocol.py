"""Anthropic Messages requests: the nulls the SDK sends for optional fields are absent, and a
field vinolm does not act on is still a 400 naming it once it carries a value."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message as SDKMessage

from vinolm.errors import InvalidRequest
from vinolm.server.anthropic.protocol import MessagesRequest
from vinolm.types import Request

TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def to_request(**fields: Any) -> Request:
    body = MessagesRequest.model_validate({"model": "m", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "Hi"}], **fields})
    return body.to_request(body.tool_plan())


def sdk_answer() -> list[dict[str, Any]]:
    """An assistant turn as clients echo it: the SDK's response blocks dumped whole (nulls included)."""
    answer = SDKMessage.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2},
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]})
    return [block.model_dump() for block in answer.content]


def test_blocks_echoed_from_the_sdk_with_their_nulls_are_accepted() -> None:
    echoed = sdk_answer()
    assert any(v is None for block in echoed for v in block.values())  # what used to be refused
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny.", "is_error": None,
              "cache_control": None, "toolset_name": None}
    request = to_request(tools=[TOOL], messages=[{"role": "user", "content": "Weather in Paris?"},
                                                 {"role": "assistant", "content": echoed},
                                                 {"role": "user", "content": [result]}])
    assert [(m.role, m.content) for m in request.messages][-2:] == [("assistant", "Let me look."), ("tool", "Sunny.")]
    assert request.messages[-2].tool_calls[0].name == "get_weather"


def test_optional_fields_sent_as_null_or_their_defaults_are_accepted() -> None:
    tool = {**TOOL, "cache_control": None, "strict": True, "defer_loading": False, "eager_input_streaming": None,
            "input_examples": None, "allowed_callers": None, "type": None}
    system = [{"type": "text", "text": "Be brief.", "cache_control": None, "citations": None}]
    request = to_request(tools=[tool], system=system, stream=None, diagnostics=None, metadata={"user_id": None},
                         tool_choice={"type": "auto", "disable_parallel_tool_use": None})
    assert request.messages[0].role == "system" and request.params.max_new_tokens == 8


@pytest.mark.parametrize(("fields", "param"), [
    ({"diagnostics": {"level": "debug"}}, "diagnostics"),
    ({"tools": [{**TOOL, "defer_loading": True}]}, "tools.0.defer_loading"),
    ({"tools": [{**TOOL, "allowed_callers": ["code_execution_20250825"]}]}, "tools.0.allowed_callers"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "citations": [{"x": 1}]}]}]},
     "messages.0.content.0.citations"),
    ({"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}, "toolset_name": "mcp"}]}]},
     "messages.1.content.0.toolset_name"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "shiny": None}]}]},
     "messages.0.content.0.shiny"),  # a field no client sends is refused even when null
])
def test_unsupported_fields_with_a_value_are_400_naming_them(fields: dict[str, Any], param: str) -> None:
    fields.setdefault("tools", [TOOL])
    with pytest.raises(InvalidRequest, match="not supported by vinolm's Anthropic Messages API") as refused:
        to_request(**fields)
    assert refused.value.param == param


@pytest.mark.parametrize(("block", "param"), [
    ({"type": "text", "text": "Hi", "id": "x"}, "messages.0.content.0.id"),
    ({"type": "text", "text": "Hi", "name": "ann"}, "messages.0.content.0.name"),
    ({"type": "tool_result", "tool_use_id": "t", "content": "ok", "input": {}}, "messages.0.content.0.input"),
])
def test_another_block_types_field_is_400_not_ignored(block: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest, match="is not a field of a") as refused:
        to_request(messages=[{"role": "user", "content": [block]}])
    assert refused.value.param == param
