"""Tool use in prompts (vinolm.prompts.tools): rendering into templates and the fallback,
each family's call format parsed back, streamed piece by piece, and the forced-call schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from vinolm import catalog
from vinolm.errors import InvalidRequest
from vinolm.prompts import ChatSpec, fit_messages, render_chat
from vinolm.prompts.tools import CallParser, calls_schema, forced_calls, format_calls
from vinolm.types import Message, Tool, ToolCall

WEATHER = Tool("get_weather", "Current weather in a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = Tool("get_time", "Current time in a time zone.",
            {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]})
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
ROUND_TRIP = [
    Message("system", "Be brief.", tools=[WEATHER]),
    Message("user", "Weather in Paris?"),
    Message("assistant", "", tool_calls=[CALL]),
    Message("tool", '{"temp_c": 21}', tool_call_id="call_1"),
]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# A Qwen2.5-like template that reads ``tools`` and renders calls and results natively.
NATIVE = ("{% if tools %}TOOLS={{ tools | tojson }}{{ '\\n' }}{% endif %}{% for m in messages %}[{{ m.role }}]"
          "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
          "{{ c.function.arguments | tojson }}{% endfor %}{% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}"
          "[assistant]")


def chatml_spec(**changes: object) -> ChatSpec:
    return ChatSpec.build(None, {"chat_template": CHATML, **changes})


# -- into the prompt -----------------------------------------------------------------------------
def test_a_template_reading_tools_gets_them_natively() -> None:
    text = render_chat(ChatSpec.build(None, {"chat_template": NATIVE}), ROUND_TRIP)
    tools_line, *turns = text.split("\n")
    assert json.loads(tools_line.removeprefix("TOOLS=")) == [WEATHER.to_dict()]
    assert turns == ["[system]Be brief.", "[user]Weather in Paris?",
                     '[assistant]CALL get_weather {"city": "Paris"}', '[tool]{"temp_c": 21}', "[assistant]"]


def test_a_tools_only_system_message_leaves_the_templates_default_in_place() -> None:
    spec = ChatSpec.build(None, {"chat_template": NATIVE})
    text = render_chat(spec, [Message("system", "", tools=[WEATHER]), Message("user", "Hi")])
    assert "[system]" not in text and text.endswith("[user]Hi\n[assistant]")


def test_other_templates_get_the_hermes_system_prompt_fallback() -> None:
    text = render_chat(chatml_spec(), ROUND_TRIP)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert json.dumps(WEATHER.to_dict()) in system and "<tool_call>" in system
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>' in text
    assert text.endswith("<|im_start|>assistant\n")


def test_smollm2_uses_the_fallback_and_catalog_formats_carry_tools_too() -> None:
    for name in ("smollm2-135m", "tiny-llama-1b-chat", "mistral-7b", "llama-3-8b-instruct"):
        entry = catalog.resolve(name)
        spec = ChatSpec.build(entry, {"chat_template": CHATML})
        text = render_chat(spec, ROUND_TRIP)
        assert "get_weather" in text and "temp_c" in text, name
    assert ChatSpec.build(catalog.resolve("mistral-7b"), None).tool_format == "mistral"
    assert ChatSpec.build(catalog.resolve("llama-3-8b-instruct"), None).tool_format == "llama3_json"
    assert ChatSpec.build(catalog.resolve("smollm2-135m"), None).tool_format == "hermes"


def test_unknown_models_get_their_format_guessed_from_the_template() -> None:
    assert ChatSpec.build(None, {"chat_template": "{{ '[TOOL_CALLS]' }}"}).tool_format == "mistral"
    assert ChatSpec.build(None, {"chat_template": "{{ '<|python_tag|>' }}"}).tool_format == "llama3_json"
    assert ChatSpec.build(None, {"chat_template": CHATML}).tool_format == "hermes"


def test_consecutive_tool_results_become_one_user_turn() -> None:
    second = ToolCall("call_2", "get_time", '{"zone": "CET"}')
    messages = [Message("system", "", tools=[WEATHER, TIME]), Message("user", "Weather and time?"),
                Message("assistant", "", tool_calls=[CALL, second]),
                Message("tool", "sunny", tool_call_id="call_1"), Message("tool", "12:00", tool_call_id="call_2")]
    text = render_chat(chatml_spec(), messages)
    assert text.count("<|im_start|>user") == 2
    assert "<tool_response>\nsunny\n</tool_response>\n<tool_response>\n12:00\n</tool_response>" in text


def test_a_tool_result_without_its_call_is_refused_naming_the_message() -> None:
    with pytest.raises(InvalidRequest, match="call_9") as info:
        render_chat(chatml_spec(), [Message("user", "Hi"), Message("tool", "x", tool_call_id="call_9")])
    assert info.value.param == "messages.1.tool_call_id"


def test_messages_refuse_misplaced_tool_fields() -> None:
    with pytest.raises(InvalidRequest, match="tool_call_id"):
        Message("tool", "result")
    with pytest.raises(InvalidRequest, match="only assistant"):
        Message("user", "x", tool_calls=[CALL])
    with pytest.raises(InvalidRequest, match="system message"):
        Message("user", "x", tools=[WEATHER])
    with pytest.raises(InvalidRequest, match="JSON object"):
        ToolCall("call_1", "f", "[1]")
    with pytest.raises(InvalidRequest, match="1-64"):
        Tool("bad name")


def test_message_api_and_dicts_stay_as_they_were_without_tools() -> None:
    assert Message("user", "hi").to_dict() == {"role": "user", "content": "hi"}
    assert Message("assistant", "", tool_calls=[CALL]).to_dict()["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]


def test_trimming_keeps_a_tool_result_with_its_call() -> None:
    old = [Message("user", "x" * 200), Message("assistant", "y" * 200)]
    messages = [ROUND_TRIP[0], *old, *ROUND_TRIP[1:]]
    kept, _, dropped = fit_messages(chatml_spec(), messages, lambda t: list(t.encode()), 1400, 100)
    assert dropped == 2 and kept == [ROUND_TRIP[0], *ROUND_TRIP[1:]]


# -- out of the answer ---------------------------------------------------------------------------
def parse_all(fmt: str, pieces: list[str], names: tuple[str, ...] = ("get_weather", "get_time")
              ) -> tuple[str, list[tuple[str, str]]]:
    parser = CallParser(fmt, names)
    content, calls = "", []
    for piece in pieces:
        out = parser.feed(piece)
        content, calls = content + out.content, calls + out.calls
    out = parser.finish()
    return content + out.content, calls + out.calls


def one_char_at_a_time(text: str) -> list[str]:
    return list(text)


HERMES = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CASES = [
    ("hermes", HERMES, "Let me check.\n", [("get_weather", '{"city": "Paris"}')]),
    ("hermes", HERMES.removesuffix("</tool_call>"), "Let me check.\n", [("get_weather", '{"city": "Paris"}')]),
    ("hermes", '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\"}"}</tool_call>', "",
     [("get_time", '{"zone": "CET"}')]),
    ("hermes", "No tools needed: 2 < 3 and <tool_ is not a tag.", "No tools needed: 2 < 3 and <tool_ is not a tag.", []),
    ("hermes", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
     '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', []),
    ("hermes", "<tool_call>{broken json</tool_call>", "<tool_call>{broken json</tool_call>", []),
    ("llama3_json", ' {"name": "get_weather", "parameters": {"city": "Rome"}}', "", [("get_weather", '{"city": "Rome"}')]),
    ("llama3_json", ('<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}; '
                    '{"name": "get_weather", "parameters": {"city": "Oslo"}}'), "",
     [("get_time", '{"zone": "UTC"}'), ("get_weather", '{"city": "Oslo"}')]),
    ("llama3_json", "It is sunny.", "It is sunny.", []),
    ("llama3_json", '{"not": "a call"}', '{"not": "a call"}', []),
    ("mistral", 'Sure [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Bern"}}]', "Sure ",
     [("get_weather", '{"city": "Bern"}')]),
    ("mistral", "Plain [TOOL answer", "Plain [TOOL answer", []),
]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
@pytest.mark.parametrize("split", [lambda t: [t], one_char_at_a_time], ids=["whole", "per-char"])
def test_native_call_formats_parse_whole_or_streamed(fmt: str, text: str, content: str,
                                                     calls: list[tuple[str, str]], split: object) -> None:
    assert parse_all(fmt, split(text)) == (content, calls)  # type: ignore[operator]


def test_streaming_releases_text_at_once_and_holds_only_a_possible_marker() -> None:
    parser = CallParser("hermes", ["get_weather"])
    assert parser.feed("Hello <to").content == "Hello "
    assert parser.feed("day").content == "<today"
    assert parser.feed(" <tool_call>{").content == " "
    out = parser.feed('"name": "get_weather", "arguments": {}}</tool_call> bye')
    assert out.calls == [("get_weather", "{}")] and out.content == " bye"


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
def test_written_calls_parse_back(fmt: str) -> None:
    calls = [CALL, ToolCall("call_2", "get_time", '{"zone": "CET"}')]
    content, parsed = parse_all(fmt, [format_calls(calls, fmt)])
    assert not content.strip() and parsed == [("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "CET"}')]


# -- forced calls ----------------------------------------------------------------------------------
def test_the_required_schema_accepts_exactly_the_offered_calls() -> None:
    single = calls_schema([WEATHER, TIME], parallel=False)
    jsonschema.validate({"name": "get_time", "arguments": {"zone": "CET"}}, single)
    for bad in ({"name": "get_time", "arguments": {"city": "Paris"}}, {"name": "other", "arguments": {}},
                [{"name": "get_time", "arguments": {"zone": "CET"}}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, single)
    many = calls_schema([WEATHER, TIME], parallel=True)
    jsonschema.validate([{"name": "get_weather", "arguments": {"city": "Paris"}},
                         {"name": "get_time", "arguments": {"zone": "CET"}}], many)
    for bad in ([], [{"name": "get_time", "arguments": {"zone": "CET"}}] * 3):  # none; more than one per tool
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, many)


def test_forced_answers_become_calls() -> None:
    assert forced_calls('{"city": "Paris"}', "get_weather") == [("get_weather", '{"city": "Paris"}')]
    assert forced_calls('[{"name": "get_time", "arguments": {"zone": "CET"}}]', None) == [
        ("get_time", '{"zone": "CET"}')]
    assert forced_calls('{"name": "get_time", "arguments": {"zo', None) == []  # cut short by max_tokens
    twice = '[{"name": "get_time", "arguments": {"zone": "CET"}}, {"name": "get_time", "arguments": {"zone": "CET"}}]'
    assert forced_calls(twice, None) == [("get_time", '{"zone": "CET"}')]


def test_lone_surrogates_in_tools_and_calls_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="surrogate"):
        ToolCall("call_1", "f", '{"a": "\\ud800"}')
    with pytest.raises(InvalidRequest, match="surrogate"):
        Tool("f", "bad \ud800 text")


@pytest.mark.parametrize("kind", ["string", "array", "integer"])
def test_parameters_that_are_not_an_object_are_refused(kind: str) -> None:
    """A forced call's arguments were parsed as an object only: a string schema's call came back as text."""
    with pytest.raises(InvalidRequest, match=f"must describe an object .*not type '{kind}'"):
        Tool("f", parameters={"type": kind})
    assert Tool("f", parameters={"properties": {"a": {"type": "string"}}}).name == "f"  # type left out: an object
