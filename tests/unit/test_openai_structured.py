"""Structured output, tool calls and top_logprobs on the OpenAI API, against the fake engine:
what reaches the engine (Constraint, tools on the system message, the tool history) and what
the client gets back (tool_calls, their stream deltas, logprobs), plus the bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes import FakeEngine, FakeModel, RecordingMetrics
from tests.unit.test_openai_protocol import USER, assert_openai_error, make_app, sse_payloads

from vinolm.errors import InvalidRequest
from vinolm.prompts.tools import auto_constraint, calls_schema
from vinolm.server.service import Limits
from vinolm.types import Constraint, Request, Tool

PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now.", "parameters": PARAMS}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
TOOL = Tool("get_weather", "Weather now.", PARAMS)


class SchemaCheckingEngine(FakeEngine):
    """Refuses schemas with a ``$bad`` key the way a real engine refuses what it cannot compile."""

    def check(self, request: Request) -> None:
        super().check(request)
        constraint = request.params.constraint
        if constraint is not None and constraint.schema is not None and "$bad" in json.dumps(constraint.schema):
            raise InvalidRequest("unsupported JSON schema keyword '$bad'", param="json_schema")


@pytest.fixture
def engine() -> FakeEngine:
    return SchemaCheckingEngine(FakeModel(context_length=4096), logprobs=True)


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    limits = Limits(max_concurrency=2, max_queue=8, max_tokens_limit=1000, max_request_bytes=1 << 16)
    with TestClient(make_app(engine, RecordingMetrics(), limits)) as c:
        yield c


def chat(client: TestClient, **fields: Any) -> Any:
    r = client.post("/v1/chat/completions", json={"messages": USER, **fields})
    assert r.status_code == 200, r.text
    return r.json()


# -- constraints ---------------------------------------------------------------------------------
CONSTRAINTS = [
    ({"response_format": {"type": "json_object"}}, Constraint("json_object")),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PARAMS, "strict": True}}},
     Constraint("json_schema", schema=PARAMS)),
    ({"response_format": {"type": "text"}}, None),
    ({"guided_json": PARAMS}, Constraint("json_schema", schema=PARAMS)),
    ({"guided_json": json.dumps(PARAMS)}, Constraint("json_schema", schema=PARAMS)),
    ({"guided_regex": "[0-9]+"}, Constraint("regex", pattern="[0-9]+")),
    ({"guided_choice": ["yes", "no"]}, Constraint("choice", choices=("yes", "no"))),
    ({"guided_grammar": 'root ::= "a"'}, Constraint("grammar", grammar='root ::= "a"')),
    ({"structured_outputs": {"json": PARAMS}}, Constraint("json_schema", schema=PARAMS)),
    ({"structured_outputs": {"json_object": True}}, Constraint("json_object")),
    ({"structured_outputs": {"regex": "a+"}}, Constraint("regex", pattern="a+")),
    ({"structured_outputs": {"choice": ["x"]}}, Constraint("choice", choices=("x",))),
    ({"structured_outputs": {"grammar": 'root ::= "b"'}}, Constraint("grammar", grammar='root ::= "b"')),
]


@pytest.mark.parametrize(("fields", "constraint"), CONSTRAINTS, ids=lambda v: None)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_each_constraint_field_reaches_the_engine(client: TestClient, engine: FakeEngine, path: str,
                                                  fields: dict[str, Any], constraint: Constraint | None) -> None:
    base: dict[str, Any] = {"messages": USER} if "chat" in path else {"prompt": "x"}
    r = client.post(path, json={**base, **fields})
    assert r.status_code == 200, r.text
    assert engine.requests[-1].params.constraint == constraint


BAD_CONSTRAINTS = [
    ({"response_format": {"type": "json_schema"}}, "json_schema.schema", "response_format.json_schema"),
    ({"response_format": {"type": "xml"}}, "json_schema", "response_format.type"),
    ({"guided_json": "{not json"}, "not valid json", "guided_json"),
    ({"guided_json": "[1]"}, "json schema object", "guided_json"),
    ({"guided_regex": ""}, "non-empty", "guided_regex"),
    ({"guided_choice": []}, "needs choices", "guided_choice"),
    ({"guided_choice": ["a", ""]}, "non-empty", "guided_choice"),
    ({"structured_outputs": {"grammar": " "}}, "non-empty", "structured_outputs.grammar"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "at most one", "guided_regex"),
    ({"guided_json": PARAMS, "structured_outputs": {"choice": ["a"]}}, "at most one", "structured_outputs.choice"),
    ({"response_format": {"type": "json_object"}, "tools": [WEATHER], "tool_choice": "required"}, "at most one", "tools"),
    ({"guided_json": {"$bad": 1}}, "$bad", "guided_json"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"$bad": 1}}}}, "$bad",
     "response_format.json_schema.schema"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$bad": 1}}}], "tool_choice": "required"},
     "$bad", "tools"),
]


@pytest.mark.parametrize(("fields", "fragment", "param"), BAD_CONSTRAINTS, ids=lambda v: None)
def test_bad_constraints_are_400_naming_the_field(client: TestClient, fields: dict[str, Any], fragment: str,
                                                  param: str) -> None:
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": USER, **fields}), 400, fragment, param)


# -- tools: what the engine gets --------------------------------------------------------------------
def test_tools_ride_on_the_system_message_and_history_keeps_calls(client: TestClient, engine: FakeEngine) -> None:
    history = [{"role": "system", "content": "Be brief."}, *USER,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    chat(client, messages=history, tools=[WEATHER])
    system, _, assistant, tool = engine.requests[-1].messages or []
    assert (system.content, system.tools) == ("Be brief.", [TOOL])
    assert assistant.tool_calls[0].name == "get_weather" and assistant.tool_calls[0].parsed_arguments == {"city": "Paris"}
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "sunny")
    assert engine.requests[-1].params.constraint == auto_constraint([TOOL], "hermes", True)  # free text or a valid call
    chat(client, tools=[WEATHER])
    assert engine.requests[-1].messages[0].role == "system" and engine.requests[-1].messages[0].content == ""  # type: ignore[index]
    chat(client, tools=[WEATHER], tool_choice="none")
    assert all(not m.tools for m in engine.requests[-1].messages or [])


def test_required_and_named_choices_constrain_the_answer(client: TestClient, engine: FakeEngine) -> None:
    chat(client, tools=[WEATHER, TIME], tool_choice="required")
    tools = [TOOL, Tool("get_time", "", {"type": "object", "properties": {}})]
    assert engine.requests[-1].params.constraint == Constraint("json_schema", schema=calls_schema(tools, True))
    chat(client, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
    assert engine.requests[-1].params.constraint == Constraint("json_schema", schema=calls_schema(tools, False))
    chat(client, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert engine.requests[-1].params.constraint == Constraint("json_schema", schema=PARAMS)


def test_auto_holds_a_started_call_to_the_models_format(client: TestClient, engine: FakeEngine) -> None:
    """tool_choice auto: a ``tool_calls`` constraint in the model's family format (the fake's
    model has no chat spec: the default, Hermes); a constraint of the request's own wins."""
    tools = [TOOL, Tool("get_time", "", {"type": "object", "properties": {}})]
    chat(client, tools=[WEATHER, TIME])
    assert engine.requests[-1].params.constraint == auto_constraint(tools, "hermes", True)
    chat(client, tools=[WEATHER, TIME], tool_choice="auto", parallel_tool_calls=False)
    assert engine.requests[-1].params.constraint == auto_constraint(tools, "hermes", False)
    chat(client, tools=[WEATHER], response_format={"type": "json_object"})
    assert engine.requests[-1].params.constraint == Constraint("json_object")
    chat(client, tools=[WEATHER], tool_choice="none")
    assert engine.requests[-1].params.constraint is None
    chat(client)
    assert engine.requests[-1].params.constraint is None


BAD_TOOLS = [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope'", "tool_choice"),
    ({"tool_choice": "required"}, "needs tools", "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "", "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "second tool", "tools.1.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "1-64", "tools.0.function"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "", "tools.0.type"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "json object", "messages.1.tool_calls.0.function"),
    ({"messages": [{"role": "user", "content": "hi", "tool_call_id": "c1"}]}, "tool_call_id", "messages.0.tool_call_id"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": []}, *USER]}, "", None),
]


@pytest.mark.parametrize(("fields", "fragment", "param"), BAD_TOOLS, ids=lambda v: None)
def test_bad_tool_requests_are_400(client: TestClient, fields: dict[str, Any], fragment: str, param: str | None) -> None:
    r = client.post("/v1/chat/completions", json={"messages": USER, **fields})
    if param is None:  # an empty tool_calls list on a user message is no call at all
        assert r.status_code == 200, r.text
        return
    assert_openai_error(r, 400, fragment, param)


# -- tools: what the client gets ---------------------------------------------------------------------
def test_forced_calls_come_back_as_tool_calls(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue('[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]')
    choice = chat(client, tools=[WEATHER, TIME], tool_choice="required")["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}), ("function", "get_time", {})]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    engine.enqueue('{"city": "Rome"}')
    named = chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                          "arguments": '{"city": "Rome"}'}


def test_a_forced_call_cut_short_is_text_with_finish_length(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue('{"city": "Pa')
    choice = chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                  max_tokens=5)["choices"][0]
    assert choice["finish_reason"] == "length" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == '{"cit'


def test_auto_recognises_the_models_own_call_format(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    choice = chat(client, tools=[WEATHER])["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    engine.enqueue("It is sunny in Oslo.")
    choice = chat(client, tools=[WEATHER])["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"] == {"role": "assistant", "content": "It is sunny in Oslo."}


def stream_events(client: TestClient, **fields: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/chat/completions", json={"messages": USER, "stream": True, **fields})
    assert r.status_code == 200, r.text
    return sse_payloads(r.text)


def test_streamed_calls_are_openai_deltas(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue('Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
                   '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    chunks = stream_events(client, tools=[WEATHER, TIME])
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == "Checking."
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    assert [(c["index"], c["type"], c["function"]["name"]) for c in calls] == [
        (0, "function", "get_weather"), (1, "function", "get_time")]
    assert all(c["id"].startswith("call_") for c in calls)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["tool_calls"]
    assert not any("<tool_call>" in (d.get("content") or "") for d in deltas)


def test_streamed_forced_call(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue('{"city": "Bern"}')
    chunks = stream_events(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or []]
    assert len(calls) == 1 and calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Bern"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- logprobs --------------------------------------------------------------------------------------------
def test_top_logprobs_in_openai_shapes(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("Hi")
    content = chat(client, logprobs=True, top_logprobs=3)["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["H", "i"]
    assert [(a["token"], a["logprob"], a["bytes"]) for a in content[0]["top_logprobs"]] == [
        ("H", -0.25, [72]), ("I", -1.25, [73]), ("J", -2.25, [74])]
    engine.enqueue("Hi")
    assert all(t["top_logprobs"] == [] for t in chat(client, logprobs=True)["choices"][0]["logprobs"]["content"])
    engine.enqueue("Hi")
    body = client.post("/v1/completions", json={"prompt": "x", "logprobs": 2}).json()
    assert body["choices"][0]["logprobs"]["top_logprobs"] == [{"H": -0.25, "I": -1.25}, {"i": -0.25, "j": -1.25}]
    assert engine.requests[-1].params.top_logprobs == 2 and engine.requests[-1].params.logprobs == 1


def test_top_logprobs_stream(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("Hi")
    chunks = stream_events(client, logprobs=True, top_logprobs=2)
    steps = [t for c in chunks if c["choices"][0]["logprobs"] for t in c["choices"][0]["logprobs"]["content"]]
    assert [len(t["top_logprobs"]) for t in steps] == [2, 2]
