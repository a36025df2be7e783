"""One ``vinolm serve`` for several models: the default chat model, a second export of it
(INT4) and an embedding model (all-MiniLM-L6-v2), through the official clients (``openai``,
``ollama`` and ``anthropic``: each chats with both chat models; the first two embed, and
Anthropic has no embeddings API, so that client only chats); loading on demand, LRU within
``--max-loaded``, and a model that fails to load next to working ones."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import numpy as np
import ollama
import pytest
from openai import BadRequestError, NotFoundError, OpenAI
from tests.e2e.conftest import RunningServer, start_server
from tritonclient.utils import InferenceServerException

from vinolm.models import default_weight_format, locate_source, prepare

pytestmark = pytest.mark.slow
CHAT = "smollm2-135m"
INT4 = "smol-int4"
EMBED = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def int4_folder() -> Path:
    return prepare(CHAT, "int4", progress=lambda _: None).path


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "openvino_model.xml").write_text("<net>not a model</net>")
    return folder


@pytest.fixture(scope="module")
def many(int4_folder: Path, broken_folder: Path) -> Iterator[RunningServer]:
    prepare(EMBED, progress=lambda _: None)
    with start_server("--no-ui", "--model", CHAT, "--model", f"{INT4}={int4_folder}", "--model", EMBED,
                      "--model", f"broken={broken_folder}") as server:
        yield server


def states(server: RunningServer) -> dict[str, str]:
    cards = httpx.get(f"{server.openai_url}/models", timeout=10).json()["data"]
    return {card["id"]: card["state"] for card in cards}


def metric(server: RunningServer, name: str, model: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.search(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def ask(client: OpenAI, model: str) -> str:
    answer = client.chat.completions.create(model=model, max_tokens=16, temperature=0,
                                            messages=[{"role": "user", "content": "What is the capital of France?"}])
    return answer.choices[0].message.content or ""


def test_models_load_on_demand_and_each_answers(many: RunningServer) -> None:
    assert states(many) == {CHAT: "loaded", INT4: "unloaded", EMBED: "unloaded", "broken": "unloaded"}
    assert httpx.get(f"{many.base_url}/health", timeout=10).json()["models"] == states(many)  # all, not the first
    cards = {card["id"]: card["task"] for card in httpx.get(f"{many.openai_url}/models", timeout=10).json()["data"]}
    # known before they load, from the folders (the broken one claims to be a chat model until it loads)
    assert cards == {CHAT: "chat", INT4: "chat", EMBED: "embedding", "broken": "chat"}
    embedding = {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}  # known before it loads
    assert httpx.get(f"{many.base_url}/v2/models/{EMBED}", timeout=10).json()["outputs"] == [embedding]
    import tritonclient.grpc as triton_grpc

    grpc_meta = triton_grpc.InferenceServerClient(many.grpc_target).get_model_metadata(EMBED, as_json=True)
    assert grpc_meta["outputs"] == [{**embedding, "shape": ["-1", "384"]}] and states(many)[EMBED] == "unloaded"
    grpc = triton_grpc.InferenceServerClient(many.grpc_target)
    for name in (EMBED, INT4):  # a version it does not have is refused before the model loads
        text = triton_grpc.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"hi"], dtype=object))
        with pytest.raises(InferenceServerException, match="version 1 only"):
            grpc.infer(name, [text], model_version="2")
    assert states(many)[EMBED] == "unloaded" and states(many)[INT4] == "unloaded"
    client = OpenAI(base_url=many.openai_url, api_key="unused")
    assert "Paris" in ask(client, CHAT)
    assert ask(client, INT4)  # int4 of a 135M model: an answer, not a promise of Paris
    vectors = client.embeddings.create(model=EMBED, input=["A cat sits on the mat.", "A kitten rests on a rug.",
                                                           "The stock market fell sharply."])
    v = np.array([item.embedding for item in vectors.data])
    assert v.shape == (3, 384) and (v @ v.T)[0, 1] > (v @ v.T)[0, 2]
    assert vectors.usage.prompt_tokens > 6
    assert states(many) == {CHAT: "loaded", INT4: "loaded", EMBED: "loaded", "broken": "unloaded"}
    index = httpx.post(f"{many.base_url}/v2/repository/index", timeout=10).json()
    assert {entry["name"]: entry["state"] for entry in index}[INT4] == "READY"
    ready = httpx.post(f"{many.base_url}/v2/repository/index", json={"ready": True}, timeout=10).json()
    assert {entry["name"] for entry in ready} == {CHAT, INT4, EMBED}  # not "broken", never loaded
    for path, body, words in (("index", {"ready": "yes"}, "ready"), ("index", {"shiny": 1}, "shiny"),
                              (f"models/{INT4}/load", {"parameters": {"config": "{}"}}, "load parameters")):
        refused = httpx.post(f"{many.base_url}/v2/repository/{path}", json=body, timeout=10)
        assert refused.status_code == 400 and words in refused.json()["error"], refused.text
    assert httpx.post(f"{many.base_url}/v2/repository/models/{INT4}/unload", timeout=30).status_code == 200
    assert states(many)[INT4] == "unloaded"  # and the next test's requests load it again


def test_ollama_and_anthropic_clients_chat_with_both_models_and_ollama_embeds(many: RunningServer) -> None:
    local = ollama.Client(host=many.base_url, timeout=120)
    claude = anthropic.Anthropic(base_url=many.base_url, api_key="unused", max_retries=0, timeout=120)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    for model in (CHAT, INT4):
        said = local.chat(model=model, messages=question, options={"temperature": 0, "num_predict": 16})
        assert said.message.content and said.model == model
        message = claude.messages.create(model=model, messages=question, max_tokens=16,  # type: ignore[arg-type]
                                         extra_body={"temperature": 0})
        assert message.model == model and message.content[0].type == "text" and message.content[0].text
    assert "Paris" in (local.chat(model=CHAT, messages=question, options={"temperature": 0}).message.content or "")
    vectors = np.array(local.embed(model=EMBED, input=["A cat sits on the mat.", "A kitten rests on a rug.",
                                                       "The stock market fell sharply."]).embeddings)
    assert vectors.shape == (3, 384) and (vectors @ vectors.T)[0, 1] > (vectors @ vectors.T)[0, 2]
    legacy = httpx.post(f"{many.base_url}/api/embeddings", json={"model": EMBED, "prompt": "A cat sits on the mat."},
                        timeout=30).json()["embedding"]
    assert np.allclose(legacy, vectors[0], atol=1e-5)
    for path, field in (("/api/embed", "input"), ("/api/embeddings", "prompt")):
        body = json.dumps({"model": EMBED, field: "a \ud800 b"})  # escaped: a JSON text may carry one
        surrogate = httpx.post(f"{many.base_url}{path}", content=body, timeout=30,
                               headers={"content-type": "application/json"})
        assert surrogate.status_code == 400 and "lone UTF-16 surrogate" in surrogate.json()["error"], surrogate.text
    out_of_vocabulary = httpx.post(f"{many.base_url}/v1/embeddings", json={"model": EMBED, "input": [[101, 2**70]]},
                                   timeout=30)
    assert out_of_vocabulary.status_code == 400 and "token id 1180591620717411303424" in out_of_vocabulary.text
    with pytest.raises(ollama.ResponseError) as wrong:
        local.embed(model=CHAT, input="hello")
    assert wrong.value.status_code == 400 and f"models that embed here: {EMBED}" in wrong.value.error
    with pytest.raises(ollama.ResponseError) as missing:
        local.chat(model="nope", messages=question)
    assert missing.value.status_code == 404 and INT4 in missing.value.error
    tags = {m.model: m for m in local.list().models}
    assert set(tags) == {CHAT, INT4, EMBED, "broken"}
    chat_format = default_weight_format(locate_source(CHAT)).upper()  # q4_1 on AVX2 alone, else INT8
    assert tags[INT4].details.quantization_level == "INT4" and tags[CHAT].details.quantization_level == chat_format  # type: ignore[union-attr]
    assert {m.model for m in local.ps().models} >= {CHAT, INT4, EMBED}
    assert local.show(EMBED).capabilities == ["embedding"]


def test_kserve_rest_and_grpc_embed_text_input(many: RunningServer) -> None:
    """KServe v2 with the embedding model: text_input BYTES [N] in, embedding FP32 [N, dim] out."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    texts = ["A cat sits on the mat.", "The stock market fell sharply."]
    expected = np.array([d.embedding for d in OpenAI(base_url=many.openai_url, api_key="unused")
                         .embeddings.create(model=EMBED, input=texts).data])
    body = {"inputs": [{"name": "text_input", "shape": [2], "datatype": "BYTES", "data": texts}]}
    rest = httpx.post(f"{many.base_url}/v2/models/{EMBED}/infer", json=body, timeout=60)
    assert rest.status_code == 200, rest.text
    out = rest.json()["outputs"][0]
    assert out["name"] == "embedding" and out["datatype"] == "FP32" and out["shape"] == [2, 384]
    assert np.allclose(np.array(out["data"]).reshape(2, 384), expected, atol=1e-5)
    meta = httpx.get(f"{many.base_url}/v2/models/{EMBED}", timeout=10).json()
    assert meta["inputs"][0]["name"] == "text_input" and meta["outputs"][0] == {
        "name": "embedding", "datatype": "FP32", "shape": [-1, 384]}
    for client in (triton_http.InferenceServerClient(many.host_port),
                   triton_grpc.InferenceServerClient(many.grpc_target)):
        module = triton_http if isinstance(client, triton_http.InferenceServerClient) else triton_grpc
        tensor = module.InferInput("text_input", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
        result = client.infer(EMBED, [tensor]).as_numpy("embedding")
        assert result.dtype == np.float32 and result.shape == (2, 384) and np.allclose(result, expected, atol=1e-5)
    bad = httpx.post(f"{many.base_url}/v2/models/{EMBED}/infer", timeout=30,
                     json={**body, "parameters": {"max_tokens": 4}})
    assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]


def test_base64_and_dimensions(many: RunningServer) -> None:
    client = OpenAI(base_url=many.openai_url, api_key="unused")
    full = client.embeddings.create(model=EMBED, input="hello world").data[0].embedding
    short = client.embeddings.create(model=EMBED, input="hello world", dimensions=64).data[0].embedding
    assert len(short) == 64 and abs(np.linalg.norm(short) - 1) < 1e-4
    raw = httpx.post(f"{many.openai_url}/embeddings", timeout=30,
                     json={"model": EMBED, "input": "hello world", "encoding_format": "base64"}).json()
    import base64

    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, full, atol=1e-6)


def test_the_wrong_task_is_a_400_naming_the_right_endpoint(many: RunningServer) -> None:
    client = OpenAI(base_url=many.openai_url, api_key="unused")
    with pytest.raises(BadRequestError, match="embedding model and does not generate"):
        ask(client, EMBED)
    with pytest.raises(BadRequestError, match="does not embed"):
        client.embeddings.create(model=CHAT, input="hello")
    with pytest.raises(NotFoundError, match=f"available: {CHAT}, {INT4}, {EMBED}, broken"):
        ask(client, "nope")
    bad = httpx.post(f"{many.openai_url}/embeddings", json={"model": EMBED, "input": "x", "user_id": 1}, timeout=10)
    assert bad.status_code == 400 and "user_id" in bad.text


def test_a_model_that_fails_to_load_is_503_and_the_others_keep_serving(many: RunningServer) -> None:
    for _ in range(2):  # tried again on the next request, failing the same way
        response = httpx.post(f"{many.openai_url}/chat/completions", timeout=60,
                              json={"model": "broken", "messages": [{"role": "user", "content": "Hi"}]})
        assert response.status_code == 503 and "failed to load" in response.json()["error"]["message"]
    assert states(many)["broken"] == "failed"
    assert metric(many, "vinolm_model_failed_total", "broken") == 2
    assert "Paris" in ask(OpenAI(base_url=many.openai_url, api_key="unused"), CHAT)
    claude = anthropic.Anthropic(base_url=many.base_url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(model="broken", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert failed.value.status_code == 503 and "failed to load" in str(failed.value)
    with pytest.raises(ollama.ResponseError) as down:
        ollama.Client(host=many.base_url, timeout=60).chat(model="broken", messages=[{"role": "user", "content": "Hi"}])
    assert down.value.status_code == 503 and "failed to load" in down.value.error


def test_max_loaded_one_unloads_the_least_recently_used(int4_folder: Path) -> None:
    with start_server("--no-ui", "--model", CHAT, "--model", f"{INT4}={int4_folder}", "--max-loaded", "1") as server:
        client = OpenAI(base_url=server.openai_url, api_key="unused")
        assert ask(client, INT4)
        assert states(server) == {CHAT: "unloaded", INT4: "loaded"}
        assert "Paris" in ask(client, CHAT)
        assert states(server) == {CHAT: "loaded", INT4: "unloaded"}
        assert metric(server, "vinolm_model_loaded_total", CHAT) == 2
        assert metric(server, "vinolm_model_unloaded_total", CHAT) == 1
        assert metric(server, "vinolm_model_unloaded_total", INT4) == 1
        assert metric(server, "vinolm_model_loaded", CHAT) == 1 and metric(server, "vinolm_model_loaded", INT4) == 0
        ps = subprocess.run([str(Path(sys.executable).with_name("vinolm")), "ps", "--url", server.host_port],
                            capture_output=True, text=True, timeout=60, check=False)
        assert ps.returncode == 0, ps.stderr
        rows = {line.split()[0]: line.split()[1] for line in ps.stdout.splitlines()[1:]}
        assert rows == {CHAT: "loaded", INT4: "unloaded"}
        assert [m.model for m in ollama.Client(host=server.base_url, timeout=30).ps().models] == [CHAT]
