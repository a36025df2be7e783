"""The real server and the official ``ollama`` Python client (``Client(host=...)``): list,
show, ps, generate and chat, streamed and not, options, NDJSON framing, Ollama's error
shape for bad bodies, an unknown model, embeddings refused, and the API key."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import ollama
import pytest
from tests.e2e.conftest import API_KEY, RunningServer, start_server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTION = "What is the capital of France?"
CHAT = [{"role": "user", "content": QUESTION}]
GREEDY = {"temperature": 0, "num_predict": 32}


def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.base_url, headers=server.headers, timeout=60)


def test_list_show_ps_describe_the_served_model(server: RunningServer) -> None:
    listed = client(server).list().models
    assert [m.model for m in listed] == [MODEL]
    assert listed[0].size and listed[0].size > 10_000_000 and len(listed[0].digest or "") == 64
    assert listed[0].details is not None and listed[0].details.format == "openvino"
    shown = client(server).show(MODEL)
    assert shown.capabilities == ["completion", "tools"] and shown.modelinfo is not None
    assert any(key.endswith(".context_length") for key in shown.modelinfo)
    running = client(server).ps().models
    assert [m.model for m in running] == [MODEL] and running[0].size_vram == 0
    assert httpx.get(f"{server.base_url}/api/version", timeout=10).json()["version"]


def test_generate_unary_and_streamed_agree(server: RunningServer) -> None:
    unary = client(server).generate(model=MODEL, prompt=QUESTION, options=GREEDY)
    assert "Paris" in unary.response and unary.done and unary.done_reason in ("stop", "length")
    assert unary.prompt_eval_count and unary.prompt_eval_count > 5 and unary.eval_count
    assert unary.total_duration and unary.eval_duration and unary.total_duration >= unary.eval_duration > 0
    parts = list(client(server).generate(model=MODEL, prompt=QUESTION, options=GREEDY, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.response for p in parts) == unary.response
    assert parts[-1].eval_count == unary.eval_count and parts[-1].done_reason == unary.done_reason


def test_chat_unary_and_streamed_with_a_system_message(server: RunningServer) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."}, *CHAT]
    unary = client(server).chat(model=MODEL, messages=messages, options=GREEDY)
    assert unary.message.role == "assistant" and "Paris" in (unary.message.content or "")
    parts = list(client(server).chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert "".join(p.message.content or "" for p in parts) == unary.message.content
    assert parts[-1].done and parts[-1].eval_count == unary.eval_count


def test_num_predict_and_stop(server: RunningServer) -> None:
    full = client(server).chat(model=MODEL, messages=CHAT, options=GREEDY).message.content or ""
    cut = client(server).chat(model=MODEL, messages=CHAT, options={"temperature": 0, "num_predict": 3})
    assert cut.done_reason == "length" and cut.eval_count == 3
    word = full.split()[2]
    stopped = client(server).chat(model=MODEL, messages=CHAT, options={**GREEDY, "stop": [word]})
    assert stopped.done_reason == "stop" and stopped.message.content == full[: full.index(word)]


def test_raw_generate_and_the_ndjson_framing(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "The capital of France is", "raw": True, "options": {"temperature": 0,
                                                                                           "num_predict": 4}}
    with httpx.stream("POST", f"{server.base_url}/api/generate", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 4 and lines[-1]["done_reason"] == "length"
    assert {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"} <= set(lines[-1])
    assert all(line["done"] is False and line["response"] for line in lines[:-1])
    loaded = httpx.post(f"{server.base_url}/api/generate", json={"model": MODEL}, timeout=10).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"


def test_errors_are_ollamas_shape(server: RunningServer) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client(server).chat(model="llama3", messages=CHAT)
    assert missing.value.status_code == 404 and MODEL in missing.value.error
    with pytest.raises(ollama.ResponseError) as embed:
        client(server).embed(model=MODEL, input="hello")
    assert embed.value.status_code == 400 and "does not embed" in embed.value.error
    url = f"{server.base_url}/api/chat"
    for body, fragment in (({"model": MODEL, "messages": CHAT, "options": {"num_ctx": 4096}}, "options.num_ctx"),
                           ({"model": MODEL, "messages": CHAT, "options": {"temperature": "hot"}}, "temperature"),
                           ({"model": MODEL, "messages": [{"role": "user"}]}, "content"),
                           ({"model": MODEL, "messages": CHAT, "tools": [{"type": "function"}]}, "tools"),
                           ({"model": MODEL, "messages": CHAT, "tools": [{"type": "function", "function": {
                               "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "bogus"}}}}}]},
                            "tools.0: tool 'f': the JSON schema is invalid at properties/a/type")):
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400 and set(r.json()) == {"error"} and fragment in r.json()["error"], r.text
    for body, fragment in (({"model": MODEL, "foo": 1}, "foo"), ({"model": MODEL, "verbose": True}, "verbose")):
        r = httpx.post(f"{server.base_url}/api/show", json=body, timeout=30)
        assert r.status_code == 400 and fragment in r.json()["error"], r.text
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "JSON" in r.json()["error"], r.text
    assert "Paris" in (client(server).chat(model=MODEL, messages=CHAT, options=GREEDY).message.content or "")


def test_ollamas_own_curl_examples_and_the_latest_tag(server: RunningServer) -> None:
    """Ollama's docs send ``curl .../api/generate -d '{...}'`` (a form's Content-Type) and name
    models with tags; ``:latest`` is the default tag."""
    body = json.dumps({"model": f"{MODEL}:latest", "prompt": QUESTION, "stream": False, "options": GREEDY})
    r = httpx.post(f"{server.base_url}/api/generate", content=body, timeout=60,
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and "Paris" in r.json()["response"], r.text
    assert r.json()["model"] == MODEL
    assert client(server).show(f"{MODEL}:latest").capabilities == ["completion", "tools"]
    with pytest.raises(ollama.ResponseError) as other_tag:
        client(server).chat(model=f"{MODEL}:7b", messages=CHAT)
    assert other_tag.value.status_code == 404


def test_keep_alive_keeps_unloads_and_is_checked() -> None:
    with start_server("--no-ui", "--keep-alive", "3600") as server:
        local = client(server)
        local.generate(model=MODEL, prompt="Hi", options=GREEDY, keep_alive="1h30m")
        expires = local.ps().models[0].expires_at
        assert expires is not None and 5300 < (expires - datetime.now(UTC)).total_seconds() <= 5400
        local.chat(model=MODEL, messages=CHAT, options=GREEDY, keep_alive=-1)
        assert local.ps().models[0].expires_at is None  # for ever
        unloaded = local.generate(model=MODEL, keep_alive=0)
        assert unloaded.done and unloaded.done_reason == "unload" and local.ps().models == []
        local.chat(model=MODEL, messages=CHAT, options=GREEDY, keep_alive=0)  # loads, answers, then unloads
        deadline = time.monotonic() + 10
        while local.ps().models and time.monotonic() < deadline:
            time.sleep(0.2)
        assert local.ps().models == []
        with pytest.raises(ollama.ResponseError) as bad:
            local.generate(model=MODEL, prompt="Hi", keep_alive="a while")
        assert bad.value.status_code == 400 and "keep_alive" in bad.value.error


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_are_offered_and_a_tool_result_round_trip_answers(server: RunningServer) -> None:
    """Ollama has no tool_choice, so the model decides; whatever it does is content or valid calls."""
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client(server).chat(model=MODEL, messages=question, tools=[WEATHER], options=GREEDY).message
    assert first.content or first.tool_calls
    for call in first.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    history = [*question, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "Sunny and 21 degrees.", "tool_name": "get_weather"}]
    unary = client(server).chat(model=MODEL, messages=history, tools=[WEATHER], options=GREEDY)
    parts = list(client(server).chat(model=MODEL, messages=history, tools=[WEATHER], options=GREEDY, stream=True))
    assert unary.message.content or unary.message.tool_calls
    assert "".join(p.message.content or "" for p in parts) == (unary.message.content or "")
    orphan = httpx.post(f"{server.base_url}/api/chat", timeout=30, json={
        "model": MODEL, "messages": [*question, {"role": "tool", "content": "x"}], "tools": [WEATHER]})
    assert orphan.status_code == 400 and "messages.1" in orphan.json()["error"]


def test_api_key_is_required(server_with_key: RunningServer) -> None:
    with pytest.raises(ollama.ResponseError) as denied:
        ollama.Client(host=server_with_key.base_url, timeout=30).list()
    assert denied.value.status_code == 401 and "API key" in denied.value.error
    answer = client(server_with_key).generate(model=MODEL, prompt=QUESTION, options={"num_predict": 4})
    assert answer.done and answer.eval_count
    assert httpx.get(f"{server_with_key.base_url}/api/tags", headers={"Authorization": f"Bearer {API_KEY}"},
                     timeout=10).status_code == 200
