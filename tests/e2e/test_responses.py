"""The real server, the ``openai`` SDK's ``client.responses`` (unary, ``stream=True`` and the
``responses.stream`` helper) and an OpenAI Agents SDK run with its default Responses model:
the event sequence, max_output_tokens -> incomplete, message-item input, the stateless
refusals, bad bodies in OpenAI's shape, an unknown model and the API key."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from agents import Agent, ModelSettings, Runner, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from tests.e2e.conftest import API_KEY, RunningServer

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTION = "What is the capital of France?"


def sdk(server: RunningServer, api_key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_url, api_key=api_key or server.api_key or "unused",
                         max_retries=0, timeout=60)


def greedy(server: RunningServer, **kwargs: object) -> openai.types.responses.Response:
    return sdk(server).responses.create(temperature=0,  # type: ignore[call-overload]
                                        **{"model": MODEL, "input": QUESTION, "max_output_tokens": 32, **kwargs})


def test_unary_response_knows_the_capital_of_france(server: RunningServer) -> None:
    response = greedy(server, instructions="You are a helpful assistant.")
    assert response.object == "response" and response.status == "completed" and response.model == MODEL
    assert "Paris" in response.output_text and response.output[0].type == "message"
    assert response.usage is not None and response.usage.input_tokens > 5
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_message_items_with_an_earlier_answer(server: RunningServer) -> None:
    first = greedy(server)
    items = [{"role": "user", "content": QUESTION}, *[item.model_dump() for item in first.output],
             {"role": "user", "content": [{"type": "input_text", "text": "And of Italy?"}]}]
    second = greedy(server, input=items)
    assert second.status in ("completed", "incomplete") and second.output_text
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens


def test_stream_has_the_responses_event_sequence(server: RunningServer) -> None:
    unary = greedy(server)
    events = list(sdk(server).responses.create(model=MODEL, input=QUESTION, temperature=0,
                                               max_output_tokens=32, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          f"response.{unary.status}"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-4].text == unary.output_text
    assert events[-1].response.usage.output_tokens == unary.usage.output_tokens  # type: ignore[union-attr]
    with sdk(server).responses.stream(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=32) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == unary.output_text


def test_max_output_tokens_makes_an_incomplete_response(server: RunningServer) -> None:
    cut = greedy(server, max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.usage.output_tokens == 3  # type: ignore[union-attr]
    events = list(sdk(server).responses.create(model=MODEL, input=QUESTION, max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"


def test_openai_agents_sdk_run_with_the_default_responses_model(server: RunningServer) -> None:
    set_tracing_disabled(True)

    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=server.openai_url, api_key="unused", max_retries=0, timeout=60)
        agent = Agent(name="assistant", instructions="You are a helpful assistant.",
                      model=OpenAIResponsesModel(MODEL, client),
                      model_settings=ModelSettings(temperature=0, max_tokens=32))
        unary = await Runner.run(agent, QUESTION)
        streamed = Runner.run_streamed(agent, QUESTION)
        async for _ in streamed.stream_events():
            pass
        return str(unary.final_output), str(streamed.final_output)

    unary, streamed = asyncio.run(run())
    assert "Paris" in unary and unary == streamed


WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_Q = "What is the weather in Paris?"


def test_required_tool_choice_gives_a_function_call_item_and_a_result_round_trip(server: RunningServer) -> None:
    forced = greedy(server, input=WEATHER_Q, tools=[WEATHER], tool_choice="required", max_output_tokens=64)
    calls = [item for item in forced.output if item.type == "function_call"]
    assert forced.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    events = list(sdk(server).responses.create(model=MODEL, input=WEATHER_Q, tools=[WEATHER],  # type: ignore[arg-type]
                                               tool_choice={"type": "function", "name": "get_weather"},
                                               temperature=0, max_output_tokens=64, stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    done = events[-1].response.output  # type: ignore[union-attr]
    assert [item.type for item in done] == ["function_call"]
    history = [{"role": "user", "content": WEATHER_Q}, calls[0].model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny and 21 degrees."}]
    answer = greedy(server, input=history, tools=[WEATHER], max_output_tokens=48)
    assert answer.output and answer.status in ("completed", "incomplete")


def test_stateless_refusals_and_bad_bodies(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as previous:
        greedy(server, previous_response_id="resp_123")
    assert previous.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        sdk(server).responses.retrieve("resp_123")
    with pytest.raises(openai.NotFoundError) as missing:
        greedy(server, model="gpt-5")
    assert MODEL in str(missing.value)
    url = f"{server.openai_url}/responses"
    for body, param in (({"model": MODEL}, "input"),
                        ({"model": MODEL, "input": QUESTION, "temperature": 5}, "temperature"),
                        ({"model": MODEL, "input": QUESTION, "reasoning": {"effort": "high"}}, "reasoning"),
                        ({"model": MODEL, "input": QUESTION, "tools": [{"type": "web_search"}]}, "tools.0.type"),
                        ({"model": MODEL, "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
                         "input.0.call_id")):
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"} and r.json()["error"]["param"] == param
    assert "Paris" in greedy(server).output_text  # and the server still serves


def test_api_key_is_required(server_with_key: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(server_with_key, api_key="wrong").responses.create(model=MODEL, input=QUESTION, max_output_tokens=4)
    assert sdk(server_with_key, api_key=API_KEY).responses.create(model=MODEL, input=QUESTION,
                                                                  max_output_tokens=4).output_text
