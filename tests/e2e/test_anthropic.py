"""The real server and the official ``anthropic`` SDK: ``messages.create`` unary and
``messages.stream``, stop sequences, max tokens, token counting, bad bodies in Anthropic's
error shape, an unknown model and the API key (sent as ``x-api-key``)."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from tests.e2e.conftest import API_KEY, RunningServer

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sdk(server: RunningServer, api_key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=api_key or server.api_key or "unused",
                               max_retries=0, timeout=60)


#: This SDK release no longer takes sampling settings as arguments; the API still does.
GREEDY = {"temperature": 0}


def greedy(server: RunningServer, **kwargs: object) -> anthropic.types.Message:
    return sdk(server).messages.create(model=MODEL, extra_body=GREEDY,  # type: ignore[arg-type,call-overload]
                                       **{"messages": QUESTION, "max_tokens": 32, **kwargs})


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_unary_message_knows_the_capital_of_france(server: RunningServer) -> None:
    """With a system prompt of its own: under SmolLM's default one the FP16 model itself nearly ties
    "The" (capital ... Paris) with "L" (L'Etoile ...), and q4_1 weights tip it, as llama.cpp's do."""
    message = greedy(server, system="You are a helpful assistant.")
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert "Paris" in text_of(message), message
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5 and 0 < message.usage.output_tokens <= 32


def test_stream_gives_the_same_text_as_unary(server: RunningServer) -> None:
    unary = greedy(server)
    with sdk(server).messages.stream(model=MODEL, messages=QUESTION, extra_body=GREEDY,  # type: ignore[arg-type]
                                     max_tokens=32) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == text_of(unary) == text_of(final)
    assert final.stop_reason == unary.stop_reason and final.usage.output_tokens == unary.usage.output_tokens
    assert final.usage.input_tokens == unary.usage.input_tokens


def test_raw_stream_has_anthropics_event_sequence(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 4, "stream": True, **GREEDY}
    r = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    events = [(e.split("\n")[0].removeprefix("event: "), json.loads(e.split("\n")[1].removeprefix("data: ")))
              for e in r.text.strip().split("\n\n")]
    kinds = [name for name, data in events if data["type"] == name]
    assert len(kinds) == len(events)  # every event's name is its data's type
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    assert events[-2][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[-2][1]["usage"]["output_tokens"] == 4
    # the SDK reads the same events (it skips ping)
    streamed = list(sdk(server).messages.create(model=MODEL, messages=QUESTION, max_tokens=4,  # type: ignore[arg-type]
                                                extra_body=GREEDY, stream=True))
    assert [e.type for e in streamed] == [k for k in kinds if k != "ping"]


def test_max_tokens_and_stop_sequences(server: RunningServer) -> None:
    full = text_of(greedy(server, max_tokens=32))
    cut = greedy(server, max_tokens=3)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    word = full.split()[2]  # a word from inside the answer ends it there
    stopped = greedy(server, stop_sequences=["zzzz", word])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert text_of(stopped) == full[: full.index(word)]


def test_count_tokens_matches_the_prompt(server: RunningServer) -> None:
    counted = sdk(server).messages.count_tokens(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]
    assert counted.input_tokens == greedy(server, max_tokens=1).usage.input_tokens
    bad_tool = {"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "bogus"}}}}
    with pytest.raises(anthropic.BadRequestError) as refused:  # as /v1/messages refuses it
        sdk(server).messages.count_tokens(model=MODEL, messages=QUESTION, tools=[bad_tool])  # type: ignore[arg-type,list-item]
    assert "tools.0: tool 'f': the JSON schema is invalid at properties/a/type" in str(refused.value)


def test_bad_requests_are_anthropic_errors(server: RunningServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk(server).messages.create(model="claude-x", messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert missing.value.status_code == 404 and MODEL in str(missing.value)
    url = f"{server.base_url}/v1/messages"
    for body, fragment in (({"model": MODEL, "messages": QUESTION}, "max_tokens"),
                           ({"model": MODEL, "max_tokens": 8, "messages": []}, "messages"),
                           ({"model": MODEL, "max_tokens": 8, "messages": QUESTION, "temperature": 3}, "temperature"),
                           ({"model": MODEL, "max_tokens": 8, "messages": QUESTION,
                             "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                             "tool_choice": {"type": "tool", "name": "g"}}, "tool_choice"),
                           ({"model": MODEL, "max_tokens": 8, "messages": QUESTION,
                             "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0")):
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error", r.text
        assert fragment in r.json()["error"]["message"], r.text
    with pytest.raises(anthropic.BadRequestError):
        sdk(server).messages.create(model=MODEL, messages=[{"role": "user", "content": [  # type: ignore[list-item]
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}], max_tokens=8)
    assert "Paris" in text_of(greedy(server, system="You are a helpful assistant."))  # and the server still serves


WEATHER = {"name": "get_weather", "description": "The current weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_a_forced_tool_choice_returns_a_tool_use_block(server: RunningServer, choice: dict[str, str]) -> None:
    message = greedy(server, messages=WEATHER_Q, tools=[WEATHER], tool_choice=choice, max_tokens=64)
    uses = [b for b in message.content if b.type == "tool_use"]
    assert message.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and isinstance(uses[0].input["city"], str)  # type: ignore[index]
    with sdk(server).messages.stream(model=MODEL, messages=WEATHER_Q, tools=[WEATHER], tool_choice=choice,  # type: ignore[arg-type]
                                     max_tokens=64, extra_body=GREEDY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds and final.stop_reason == "tool_use"
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in streamed] == [(u.name, u.input) for u in uses]


def test_a_tool_result_round_trip_answers(server: RunningServer) -> None:
    first = greedy(server, messages=WEATHER_Q, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=64)
    use = next(b for b in first.content if b.type == "tool_use")
    history = [*WEATHER_Q, {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # nulls too
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": "Sunny and 21 degrees."}]}]
    answer = greedy(server, messages=history, tools=[WEATHER], max_tokens=48)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content
    unknown = httpx.post(f"{server.base_url}/v1/messages", timeout=30, json={
        "model": MODEL, "max_tokens": 8, "messages": [*WEATHER_Q, history[2] | {"content": [
            {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]})
    assert unknown.status_code == 400 and unknown.json()["error"]["type"] == "invalid_request_error"


def test_api_key_is_enforced_as_x_api_key(server_with_key: RunningServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        sdk(server_with_key, api_key="wrong").messages.create(model=MODEL, messages=QUESTION,  # type: ignore[arg-type]
                                                               max_tokens=4)
    assert wrong.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    r = httpx.post(f"{server_with_key.base_url}/v1/messages", headers={"x-api-key": API_KEY}, timeout=60,
                   json={"model": MODEL, "max_tokens": 4, "messages": QUESTION})
    assert r.status_code == 200 and r.json()["usage"]["output_tokens"] > 0, r.text
    assert greedy(server_with_key, max_tokens=4).usage.output_tokens > 0
