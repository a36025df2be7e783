"""The genai engine's continuous batching when a request outgrows the KV cache it holds.

genai gives up on ("ignores") a sequence that needs more KV blocks than the whole cache has.
Before any token that is the request's size against the server's setting: a 400 saying so.
After some, the answer ends as it would at the context's end (``length``), never as an empty
or silently cut ``cancelled`` one. The cache here is four of genai's blocks (128 tokens on
CPU, 32 a block; the sizes below hold for blocks up to 64 tokens).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from fastapi.testclient import TestClient
from tests.e2e.conftest import free_port

from vinolm.engines import Engine, EngineOptions, load_engine
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel
from vinolm.server.app import build_app
from vinolm.server.grpc import serve_grpc
from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from vinolm.server.kserve.tensors import pack_bytes
from vinolm.server.service import ModelService
from vinolm.types import GenerationParams, Request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_cache(default_model: PreparedModel) -> Iterator[Engine]:
    engine = load_engine("genai", default_model, EngineOptions(batching=True, kv_cache_blocks=4))
    yield engine
    engine.close()


def _words(count: int) -> str:
    return " ".join(f"item{i % 50}" for i in range(count))


def test_a_prompt_larger_than_the_cache_is_refused_before_any_token(small_cache: Engine) -> None:
    request = Request(prompt=_words(300), params=GenerationParams(max_new_tokens=8))
    with pytest.raises(InvalidRequest, match=r"the prompt \(\d+ tokens\) does not fit in this server's KV cache "
                                             r"\(4 blocks\): send a shorter one, or start the server with a larger "
                                             r"--kv-cache-gb"):
        small_cache.complete(request)
    after = small_cache.complete(Request(prompt="The capital of France is", params=GenerationParams(max_new_tokens=4)))
    assert after.finish_reasons == ["length"] and after.metrics.output_tokens == 4


def test_an_answer_that_outgrows_the_cache_ends_with_length(small_cache: Engine) -> None:
    prompt = "Count: " + _words(12)
    result = small_cache.complete(Request(prompt=prompt, params=GenerationParams(max_new_tokens=400, ignore_eos=True)))
    prompt_tokens = len(small_cache.tokenize(prompt))
    assert result.finish_reasons == ["length"]
    assert 0 < result.metrics.output_tokens < 400
    assert prompt_tokens + result.metrics.output_tokens <= 4 * 64
    assert result.text.strip()


@pytest.mark.parametrize("stream", [False, True])
def test_the_refusal_is_a_400_in_the_openai_shape(small_cache: Engine, stream: bool) -> None:
    with TestClient(build_app(ModelService(small_cache, ["smollm2-135m"]), ui=False)) as client:
        response = client.post("/v1/completions", json={"model": "smollm2-135m", "prompt": _words(300),
                                                         "max_tokens": 8, "stream": stream})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "does not fit in this server's KV cache (4 blocks)" in error["message"]


def test_the_refusal_is_invalid_argument_over_grpc(small_cache: Engine) -> None:
    port = free_port()
    server = serve_grpc(ModelService(small_cache, ["smollm2-135m"]), "127.0.0.1", port)
    request = pb.ModelInferRequest(model_name="smollm2-135m")
    request.inputs.add(name="pre_prompt", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(pack_bytes([_words(300).encode()]))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=60)
            streamed = list(stub.ModelStreamInfer(iter([request]), timeout=60))
    finally:
        server.stop()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not fit in this server's KV cache" in (caught.value.details() or "")
    assert [r.error_message.split(":")[0] for r in streamed] == ["INVALID_ARGUMENT"]
