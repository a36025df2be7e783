"""The OpenAI API in-process against the fake engine: wire format, bad input, limits, auth,
cancellation and metrics. No OpenVINO; each test runs in milliseconds.

The disconnect tests drive the ASGI app directly, so "the client left after the first
chunk" is an exact event rather than a timing guess.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.fakes import FakeEngine, FakeModel, RecordingMetrics

from vinolm.server.app import build_app
from vinolm.server.metrics import ServerMetrics
from vinolm.server.service import Limits, ModelService

USER = [{"role": "user", "content": "What is the capital of France?"}]
LIMITS = Limits(max_concurrency=2, max_queue=8, max_tokens_limit=100, max_request_bytes=4096)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(FakeModel(context_length=256))


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


def make_app(engine: FakeEngine, metrics: ServerMetrics, limits: Limits = LIMITS, api_key: str | None = None) -> FastAPI:
    service = ModelService(engine, ["fake-model", "alias"], limits, metrics)
    return build_app(service, api_key=api_key, ui=False)


@pytest.fixture
def client(engine: FakeEngine, metrics: RecordingMetrics) -> Iterator[TestClient]:
    with TestClient(make_app(engine, metrics)) as c:
        yield c


def assert_openai_error(response: Any, status: int, fragment: str = "", param: str | None = "?") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert fragment.lower() in body["error"]["message"].lower(), body
    if param != "?":
        assert body["error"]["param"] == param, body
    return body["error"]


def sse_payloads(text: str) -> list[Any]:
    """The data of each server-sent event; asserts the framing and the final [DONE]."""
    events = text.split("\n\n")
    assert events[-1] == "", "the stream must end with a blank line"
    datas = []
    for event in events[:-1]:
        assert event.startswith("data: ") and "\n" not in event, event
        datas.append(event[len("data: "):])
    assert datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


# -- happy paths -------------------------------------------------------------------------------------
def test_models_lists_every_served_name(client: TestClient) -> None:
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["fake-model", "alias"]
    assert client.get("/v1/models/alias").json()["id"] == "alias"
    assert_openai_error(client.get("/v1/models/gpt-4"), 404, "gpt-4", param="model")
    assert_openai_error(client.get("/v1/models/"), 404, "model '' is not served here", param="model")


def test_chat_unary_uses_chat_messages_and_openai_defaults(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("Paris.")
    r = client.post("/v1/chat/completions", json={"model": "alias", "messages": USER})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "alias" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                                "logprobs": None, "finish_reason": "stop"}]
    prompt_len = len(engine.format_chat([]).replace("<assistant>", "")) + len("<user>What is the capital of France?\n<assistant>")
    assert body["usage"] == {"prompt_tokens": prompt_len, "completion_tokens": 7, "total_tokens": prompt_len + 7}
    sent = engine.requests[0]
    assert sent.messages is not None and sent.messages[0].content == USER[0]["content"]
    assert sent.params.temperature == 1.0  # OpenAI's default, not greedy
    assert sent.params.max_new_tokens == LIMITS.max_tokens_limit


def test_completion_defaults_to_16_tokens_and_reports_length(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("abcdefghijklmnopqrstuvwxyz")
    body = client.post("/v1/completions", json={"model": "fake-model", "prompt": "x"}).json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "abcdefghijklmnop" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 16, "total_tokens": 17}


def test_request_fields_reach_generation_params(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "developer", "content": "Be brief."}, *USER],
        "max_tokens": 50, "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 3,
        "stop": "!", "presence_penalty": 0.5, "frequency_penalty": -0.5, "top_k": 40, "min_p": 0.1,
        "repetition_penalty": 1.2, "ignore_eos": True, "user": "someone"})
    assert r.status_code == 200, r.text
    request = engine.requests[0]
    params = request.params
    assert request.messages is not None and request.messages[0].role == "system"
    assert (params.max_new_tokens, params.temperature, params.top_p, params.seed) == (7, 0.0, 0.5, 3)
    assert (params.stop, params.presence_penalty, params.frequency_penalty) == (["!"], 0.5, -0.5)
    assert (params.top_k, params.min_p, params.repetition_penalty, params.ignore_eos) == (40, 0.1, 1.2, True)


def test_stop_strings_end_the_text_without_being_returned(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("Paris. Lyon. Nice.")
    body = client.post("/v1/completions", json={"prompt": "x", "stop": [". L", "zz"], "max_tokens": 50}).json()
    assert body["choices"][0]["text"] == "Paris" and body["choices"][0]["finish_reason"] == "stop"


def test_n_choices_are_separate_requests_with_distinct_seeds(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("one", "two", "three")
    body = client.post("/v1/completions", json={"prompt": "hi", "n": 3, "seed": 7, "max_tokens": 10}).json()
    assert sorted(c["text"] for c in body["choices"]) == ["one", "three", "two"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert sorted(r.params.seed for r in engine.requests) == [7, 8, 9]
    assert body["usage"]["prompt_tokens"] == 2  # the prompt counts once, not once per choice
    greedy = client.post("/v1/chat/completions", json={"messages": USER, "n": 2, "temperature": 0}).json()
    assert len(greedy["choices"]) == 2


def test_a_list_of_prompts_gives_one_choice_per_prompt(client: TestClient, engine: FakeEngine) -> None:
    body = client.post("/v1/completions", json={"prompt": ["a", "bb"], "n": 2, "max_tokens": 3}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert sorted(r.prompt for r in engine.requests) == ["a", "a", "bb", "bb"]
    assert body["usage"]["prompt_tokens"] == 3


def test_chat_stream_frames_role_content_usage_and_done(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("Paris.")
    r = client.post("/v1/chat/completions", json={"messages": USER, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_payloads(r.text)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1] if c["choices"]]
    assert "".join(content) == "Paris."
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:-1]][-1] == "stop"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 7
    assert all(c["usage"] is None for c in chunks[:-1])


def test_completion_stream_without_usage_and_with_n(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("ab", "cd")
    r = client.post("/v1/completions", json={"prompt": "x", "n": 2, "stream": True})
    chunks = sse_payloads(r.text)
    assert all(c["usage"] is None and c["object"] == "text_completion" for c in chunks)
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert sorted(texts.values()) == ["ab", "cd"] and finishes == {0: "stop", 1: "stop"}


def test_logprobs_when_the_engine_reports_them(metrics: RecordingMetrics) -> None:
    engine = FakeEngine(logprobs=True)
    engine.enqueue("Hi")
    with TestClient(make_app(engine, metrics)) as c:
        body = c.post("/v1/chat/completions", json={"messages": USER, "logprobs": True}).json()
        content = body["choices"][0]["logprobs"]["content"]
        assert [(t["token"], t["logprob"]) for t in content] == [("H", -0.25), ("i", -0.25)]
        engine.enqueue("Hi")
        body = c.post("/v1/completions", json={"prompt": "x", "logprobs": 0}).json()
        assert body["choices"][0]["logprobs"]["tokens"] == ["H", "i"]
        assert body["choices"][0]["logprobs"]["text_offset"] == [0, 1]


def test_inert_fields_are_accepted_as_no_ops(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={
        "messages": USER, "user": "u1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto",
        "logit_bias": {}, "modalities": ["text"], "prompt_cache_key": "abc", "safety_identifier": "s",
        "messages_extra": None} | {"messages": [{"role": "user", "content": "hi", "name": "ann"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages_extra"
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi", "name": "ann"}], "user": "u1", "metadata": {"k": "v"},
        "store": False, "service_tier": "default", "logit_bias": {}, "modalities": ["text"], "functions": None})
    assert r.status_code == 200, r.text
    r = client.post("/v1/completions", json={"prompt": "x", "echo": False, "best_of": 1, "suffix": ""})
    assert r.status_code == 200, r.text


UNSUPPORTED = [
    ({"x_custom": 1}, "x_custom"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"store": True}, "store"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"stream_options": {"include_usage": True, "chunked": 1}}, "stream_options.chunked"),
    ({"messages": [{"role": "user", "content": "hi", "audio": {}}]}, "messages.0.audio"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache": 1}]}]},
     "messages.0.content.0.cache"),
    ({"tools": [{"type": "function", "function": {"name": "f", "x": 1}}]}, "tools.0.function.x"),
    ({"response_format": {"type": "json_object", "extra": 1}}, "response_format.extra"),
    ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag"),
]


@pytest.mark.parametrize(("fields", "param"), UNSUPPORTED, ids=[p for _, p in UNSUPPORTED])
def test_fields_vinolm_does_not_act_on_are_400_naming_them(client: TestClient, fields: dict[str, Any],
                                                           param: str) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json={"messages": USER, **fields}), 400,
                                "not supported by vinolm", param)
    assert error["code"] == "unsupported_parameter"


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when stream is true"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls", "only allowed when tools are given"),
    ({"response_format": {"type": "text", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     "response_format.json_schema", "goes with type json_schema"),
])
def test_fields_that_would_change_nothing_in_this_request_are_400(client: TestClient, fields: dict[str, Any],
                                                                 param: str, words: str) -> None:
    """As OpenAI answers them: each only acts together with another field the request lacks."""
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": USER, **fields}), 400, words, param)


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": [{"role": "user", "content": "hi", "call_id": "c1"}]}, "input.0.call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c1", "output": "x", "role": "user"}]}, "input.0.role"),
    ({"text": {"format": {"type": "text", "schema": {"type": "object"}}}}, "text.format.schema"),
])
def test_responses_refuse_fields_of_another_item_or_format_type(client: TestClient, fields: dict[str, Any],
                                                                param: str) -> None:
    r = client.post("/v1/responses", json={"input": "hi", **fields})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_an_answer_over_the_limit_is_named_as_each_api_names_it(client: TestClient) -> None:
    for path, body, param in (("/v1/chat/completions", {"messages": USER, "max_tokens": 101}, "max_tokens"),
                              ("/v1/responses", {"input": "hi", "max_output_tokens": 101}, "max_output_tokens")):
        error = assert_openai_error(client.post(path, json=body), 400, f"{param} 101 is over", param)
        assert "limit of 100" in error["message"]
    r = client.post("/api/chat", json={"model": "fake-model", "messages": USER, "stream": False,
                                       "options": {"num_predict": 101}})
    assert r.status_code == 400 and r.json()["error"].startswith("options.num_predict 101 is over"), r.text


def test_completions_refuse_what_they_cannot_do(client: TestClient) -> None:
    for fields, param in (({"echo": True}, "echo"), ({"best_of": 3}, "best_of"), ({"suffix": "end"}, "suffix"),
                          ({"tools": []}, "tools")):
        assert_openai_error(client.post("/v1/completions", json={"prompt": "x", **fields}), 400,
                            "not supported by vinolm", param)


# -- bad input ----------------------------------------------------------------------------------------
BAD_JSON = [
    pytest.param(b'{"messages": [', "not valid json", None, id="invalid-json"),
    pytest.param(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "not valid utf-8", None, id="invalid-utf8"),
    pytest.param(b"", "body is missing", None, id="empty-body"),
    pytest.param(b"[1, 2]", "json object", None, id="array-body"),
]


@pytest.mark.parametrize(("raw", "fragment", "param"), BAD_JSON)
def test_unparseable_bodies_are_400(client: TestClient, raw: bytes, fragment: str, param: str | None) -> None:
    r = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, fragment, param)


CHAT_BAD = [
    ({"messages": "hi"}, "messages", "messages"),
    ({"messages": USER, "temperature": "hot"}, "valid number", "temperature"),
    ({"messages": USER, "max_tokens": "5"}, "valid integer", "max_tokens"),
    ({"messages": USER, "stream": "yes"}, "valid boolean", "stream"),
    ({"messages": USER, "n": 1.5}, "valid integer", "n"),
    ({}, "field required", "messages"),
    ({"messages": []}, "at least 1", "messages"),
    ({"messages": [{"content": "hi"}]}, "field required", "messages.0.role"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "'wizard'", "messages.0.role"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, "tool_call_id", "messages.0.tool_call_id"),
    ({"messages": [{"role": "tool", "content": "hi", "tool_call_id": "call_x"}]}, "call_x",
     "messages.0.tool_call_id"),
    ({"messages": [{"role": "assistant"}, *USER]}, "neither content nor tool_calls", "messages.0.content"),
    ({"messages": [{"role": "user"}]}, "content is missing", "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text", "messages.0.content.0.type"),
    ({"messages": USER, "max_tokens": 0}, "greater than or equal to 1", "max_tokens"),
    ({"messages": USER, "max_tokens": -5}, "greater than or equal to 1", "max_tokens"),
    ({"messages": USER, "max_completion_tokens": 0}, "greater than or equal to 1", "max_completion_tokens"),
    ({"messages": USER, "max_tokens": 101}, "limit of 100", "max_tokens"),
    ({"messages": USER, "temperature": -0.1}, "greater than or equal to 0", "temperature"),
    ({"messages": USER, "temperature": 2.5}, "less than or equal to 2", "temperature"),
    ({"messages": USER, "top_p": 0}, "greater than 0", "top_p"),
    ({"messages": USER, "top_p": 1.5}, "less than or equal to 1", "top_p"),
    ({"messages": USER, "presence_penalty": 3}, "less than or equal to 2", "presence_penalty"),
    ({"messages": USER, "seed": -1}, "greater than or equal to 0", "seed"),
    ({"messages": USER, "n": 0}, "greater than or equal to 1", "n"),
    ({"messages": USER, "stop": ["ok", 3]}, "valid string", "stop"),
    ({"messages": USER, "stop": [""]}, "non-empty", "stop"),
    ({"messages": USER, "logprobs": True}, "not supported", "logprobs"),
    ({"messages": USER, "top_logprobs": 2}, "needs logprobs", "top_logprobs"),
    ({"messages": USER, "logprobs": True, "top_logprobs": 21}, "less than or equal to 20", "top_logprobs"),
    ({"messages": USER, "repetition_penalty": 0}, "greater than 0", "repetition_penalty"),
    ({"messages": [{"role": "user", "content": "x" * 300}]}, "context is 256 tokens", "messages"),
    ({"messages": [{"role": "user", "content": "x" * 300}], "stream": True}, "context is 256 tokens", "messages"),
]


@pytest.mark.parametrize(("body", "fragment", "param"), CHAT_BAD, ids=lambda v: None)
def test_bad_chat_requests_are_400_naming_the_problem(client: TestClient, body: dict[str, Any], fragment: str,
                                                      param: str) -> None:
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, fragment, param)


COMPLETION_BAD = [
    ({}, "field required", "prompt"),
    ({"prompt": ""}, "empty", "prompt"),
    ({"prompt": "   "}, "empty", "prompt"),
    ({"prompt": []}, "empty list", "prompt"),
    ({"prompt": ["ok", ""]}, "empty", "prompt.1"),
    ({"prompt": 42}, "valid string", "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "greater than or equal to 1", "max_tokens"),
    ({"prompt": "x", "max_tokens": 1000}, "limit of 100", "max_tokens"),
    ({"prompt": "x", "logprobs": 2}, "not supported", "logprobs"),
    ({"prompt": "x", "logprobs": 6}, "less than or equal to 5", "logprobs"),
    ({"prompt": "x" * 300}, "context is 256 tokens", "prompt"),
    ({"prompt": "x" * 300, "stream": True}, "context is 256 tokens", "prompt"),
]


@pytest.mark.parametrize(("body", "fragment", "param"), COMPLETION_BAD, ids=lambda v: None)
def test_bad_completion_requests_are_400_naming_the_problem(client: TestClient, body: dict[str, Any],
                                                            fragment: str, param: str) -> None:
    assert_openai_error(client.post("/v1/completions", json=body), 400, fragment, param)


def test_unknown_model_is_404_in_openai_shape(client: TestClient) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": USER}),
                                404, "gpt-4o", "model")
    assert error["code"] == "model_not_found"
    assert_openai_error(client.post("/v1/completions", json={"model": "gpt-4o", "prompt": ""}), 404, "gpt-4o")


def test_unknown_routes_and_methods_keep_each_protocols_shape(client: TestClient) -> None:
    assert_openai_error(client.get("/v1/nothing"), 404, "no route")
    assert_openai_error(client.get("/v1/chat/completions"), 405)
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_request_size_limit_is_413(client: TestClient) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert_openai_error(client.post("/v1/chat/completions", json=big), 413, "limit of 4096 bytes")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield json.dumps(big).encode()

    assert_openai_error(client.post("/v1/chat/completions", content=chunked(),
                                    headers={"content-type": "application/json"}), 413, "limit of 4096 bytes")


def test_server_keeps_serving_after_bad_requests(client: TestClient) -> None:
    for raw in (b"{", b"\xff", b'{"messages": 3}'):
        client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert client.post("/v1/chat/completions", json={"messages": USER}).status_code == 200


def test_engine_failure_is_a_500_or_an_error_event(client: TestClient, engine: FakeEngine) -> None:
    engine.fail_after = 3
    error = assert_openai_error(client.post("/v1/completions", json={"prompt": "x"}), 500, "failed on purpose")
    assert error["type"] == "engine_error"
    chunks = client.post("/v1/completions", json={"prompt": "x", "stream": True}).text.split("\n\n")
    error_event = json.loads(chunks[-3].removeprefix("data: "))
    assert error_event["error"]["message"] == "the fake engine failed on purpose"
    assert chunks[-2:] == ["data: [DONE]", ""]  # the stream still ends as streams do
    responses = client.post("/v1/responses", json={"input": "x", "stream": True}).text
    events = [json.loads(line.removeprefix("data: ")) for line in responses.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["message"] == "the fake engine failed on purpose"
    engine.fail_after = None
    assert client.post("/v1/completions", json={"prompt": "x"}).status_code == 200


# -- API key, queue limit -----------------------------------------------------------------------------
API_ROUTES = [("GET", "/v1/models"), ("GET", "/v1/models/fake-model"), ("POST", "/v1/completions"),
              ("POST", "/v1/chat/completions"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
              ("GET", "/v2"), ("GET", "/v2/models/fake-model"), ("POST", "/v2/models/fake-model/infer")]


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_api_key_is_required_on_every_api_route(engine: FakeEngine, metrics: RecordingMetrics,
                                                method: str, path: str) -> None:
    with TestClient(make_app(engine, metrics, api_key="s3cret")) as c:
        body = {"prompt": "x", "messages": USER}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "nope"}):
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.headers["www-authenticate"] == "Bearer"
            error = r.json()["error"]
            assert (error if path.startswith("/v2") else error["message"]).startswith("missing or wrong API key")
        for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
            assert c.request(method, path, json=body, headers=headers).status_code != 401


def test_open_routes_need_no_api_key(engine: FakeEngine, metrics: RecordingMetrics) -> None:
    with TestClient(make_app(engine, metrics, api_key="s3cret")) as c:
        for path in ("/metrics", "/health", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 200, path


def test_full_queue_is_429_with_retry_after(engine: FakeEngine, metrics: RecordingMetrics) -> None:
    limits = Limits(max_concurrency=1, max_queue=0, max_tokens_limit=100)
    engine.gate.clear()
    with TestClient(make_app(engine, metrics, limits)) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/v1/completions", json={"prompt": "x"})
        assert engine.started.wait(5), "the first request never started"
        r = c.post("/v1/chat/completions", json={"messages": USER})
        error = assert_openai_error(r, 429, "busy")
        assert r.headers["retry-after"] == "1" and error["type"] == "rate_limit_error"
        engine.gate.set()
        assert first.result(timeout=5).status_code == 200
    assert metrics.requests("openai", "429") == 1 and metrics.requests("openai", "200") == 1


def test_more_answers_than_the_server_holds_is_a_400_not_a_429(engine: FakeEngine, metrics: RecordingMetrics) -> None:
    """A 429 says "retry shortly", and SDKs do, but no retry gets 4 answers from a server of 3."""
    limits = Limits(max_concurrency=1, max_queue=2, max_tokens_limit=100)
    with TestClient(make_app(engine, metrics, limits)) as c:
        for body, param in (({"prompt": "x", "n": 4, "temperature": 1.0}, "n"),
                            ({"prompt": ["a", "b", "c", "d"]}, "prompt")):
            error = assert_openai_error(c.post("/v1/completions", json=body), 400, "4 answers at once", param)
            assert "(3: --max-concurrency plus --max-queue)" in error["message"]
        assert c.post("/v1/completions", json={"prompt": "x", "n": 3, "temperature": 1.0}).status_code == 200
    assert metrics.requests("openai", "400") == 2 and metrics.requests("openai", "429") == 0


# -- cancellation (raw ASGI, so the disconnect is an exact event) -------------------------------------
async def _call(app: FastAPI, body: dict[str, Any], disconnect: asyncio.Event,
                on_send: Callable[[dict[str, Any]], None], path: str = "/v1/chat/completions") -> None:
    payload = json.dumps(body).encode()
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        on_send(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)


def test_stream_disconnect_cancels_generation_and_frees_the_slot(engine: FakeEngine,
                                                                 metrics: RecordingMetrics) -> None:
    engine.delay = 0.005
    engine.default = "x" * 2000
    app = make_app(engine, metrics)

    async def scenario() -> list[bytes]:
        disconnect = asyncio.Event()
        bodies: list[bytes] = []

        def on_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and b'"content":"x"' in message.get("body", b""):
                bodies.append(message["body"])
                disconnect.set()  # the client leaves right after its first token

        await _call(app, {"messages": USER, "stream": True, "max_tokens": 100}, disconnect, on_send)
        # wait inside the loop: the engine thread still hands its last chunk to it
        assert await asyncio.to_thread(engine.cancelled_event.wait, 5), "the engine never saw the cancel"
        assert await asyncio.to_thread(
            metrics.wait_for, lambda: metrics.running == 0 and metrics.requests("openai", "499") == 1)
        return bodies

    bodies = asyncio.run(scenario())
    assert bodies and not any(b"[DONE]" in b or b"cancelled" in b for b in bodies)
    assert 0 < metrics.generated_tokens < 100


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream-before-first-token"])
def test_disconnect_while_waiting_cancels_generation(engine: FakeEngine, metrics: RecordingMetrics,
                                                     stream: bool) -> None:
    engine.gate.clear()
    app = make_app(engine, metrics)

    async def scenario() -> list[dict[str, Any]]:
        disconnect = asyncio.Event()
        sent: list[dict[str, Any]] = []
        call = asyncio.ensure_future(_call(app, {"prompt": "x", "stream": stream}, disconnect, sent.append,
                                           "/v1/completions"))
        assert await asyncio.to_thread(engine.started.wait, 5)
        disconnect.set()
        await call
        assert await asyncio.to_thread(engine.cancelled_event.wait, 5), "the engine never saw the cancel"
        assert await asyncio.to_thread(
            metrics.wait_for, lambda: metrics.running == 0 and metrics.requests("openai", "499") == 1)
        return sent

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 499


# -- metrics, access log, docs ------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def parse_prometheus(text: str) -> dict[str, float]:
    """name{labels} -> value; asserts every line is a valid sample, HELP or TYPE line."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.strip().splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        name = match.group(1)
        assert any(name == t or name.startswith(t + "_") for t in typed), f"{name} has no TYPE"
        samples[name + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_metrics_text_parses_and_counts(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("abc")
    client.post("/v1/completions", json={"prompt": "hello"})
    client.post("/v1/completions", json={"prompt": ""})  # refused before the service: counted by the app
    client.post("/v1/completions", json={"prompt": "x" * 300})  # refused by the engine: counted by the service
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(r.text)
    assert samples['vinolm_requests_total{protocol="openai",status="200"}'] == 1
    assert samples['vinolm_requests_total{protocol="openai",status="400"}'] == 2  # each counted once
    assert samples["vinolm_prompt_tokens_total"] == 5 and samples["vinolm_generated_tokens_total"] == 4
    assert samples["vinolm_requests_running"] == 0 and samples["vinolm_requests_queued"] == 0
    for histogram in ("vinolm_time_to_first_token_seconds", "vinolm_time_per_output_token_seconds"):
        buckets = [v for k, v in samples.items() if k.startswith(histogram + "_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == samples[histogram + "_count"] == 1


def test_access_log_is_one_json_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vinolm.access"):
        client.post("/v1/completions", json={"prompt": ""})
        client.get("/metrics")
    lines = [json.loads(r.message) for r in caplog.records if r.name == "vinolm.access"]
    assert [(x["method"], x["path"], x["status"], x["protocol"]) for x in lines] == [
        ("POST", "/v1/completions", 400, "openai"), ("GET", "/metrics", 200, "http")]
    assert all(x["duration_ms"] >= 0 for x in lines)


def test_openapi_documents_the_endpoints_and_extensions(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/models", "/v1/completions", "/v1/chat/completions"} <= set(spec["paths"])
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "vinolm extension" in chat["top_k"]["description"]


def test_serve_rejects_bad_limits_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    from vinolm.cli import main

    assert main(["serve", "--max-concurrency", "0"]) == 2
    assert "--max-concurrency must be >= 1" in capsys.readouterr().err
    assert main(["serve", "--grpc-port", "70000"]) == 2
    capsys.readouterr()
    for argv, needle in ((["--kv-cache-gb", "-1"], "--kv-cache-gb must be >= 0"),
                         (["--max-batched-tokens", "0"], "--max-batched-tokens must be >= 1"),
                         (["--engine", "native", "--kv-cache-gb", "2"], "the native engine serves one request at a time"),
                         (["--engine", "optimum", "--max-batched-tokens", "512"], "size the genai engine's"),
                         (["--kv-cache-gb", "100000"], "--kv-cache-gb 100000 is more than this machine's memory")):
        assert main(["serve", *argv]) == 2
        assert needle in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        for argv, flag in ((["--port", port, "--grpc-port", "0"], "--port"), (["--port", "0", "--grpc-port", port],
                                                                              "--grpc-port")):
            assert main(["serve", *argv]) == 2
            assert capsys.readouterr().err == f"vinolm: error: {flag} {port}: cannot listen on 127.0.0.1:{port} (in use)\n"
    assert main(["serve", "--served-model-name", ""]) == 2
    assert "--served-model-name takes non-empty names" in capsys.readouterr().err
    for ref, words in (("nope", "unknown model 'nope'"), ("./nofolder", "no such file or folder: ./nofolder")):
        assert main(["serve", "--model", "smollm2-135m", "--model", ref, "--port", "0", "--grpc-port", "0"]) == 2
        assert capsys.readouterr().err.startswith(f"vinolm: error: {words}")  # before any model loads
