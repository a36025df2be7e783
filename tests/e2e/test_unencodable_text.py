"""Text that no tokenizer can take, on every protocol: a 4xx naming the field, never a 500.

JSON may escape a lone UTF-16 surrogate (``"\\ud800"``): it parses into a Python ``str``
that UTF-8 cannot encode, and used to reach openvino-genai's tokenizer, whose pybind
error text leaked to the client with a 500. Binary transports carry bytes instead, so
their version of the same mistake is the surrogate's WTF-8 bytes, which are not UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest
from tests.e2e.conftest import RunningServer

from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from vinolm.server.kserve.tensors import pack_bytes

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
LONE = "\ud800"
LEAKS = ("incompatible function arguments", "encode()", "Traceback", "pybind")


def post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    """The body as JSON with the surrogate escaped, which is how a JSON client sends it."""
    content = json.dumps(body, ensure_ascii=True)
    return httpx.post(f"{server.base_url}{path}", content=content, timeout=60,
                      headers={"Content-Type": "application/json"})


def assert_openai_400(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert "surrogate" in error["message"] and not any(leak in response.text for leak in LEAKS)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": LONE}]}, "messages.0.content"),
        ({"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": f"Hi {LONE}"}]}]}, "messages.1.content"),
        ({"messages": [{"role": "user", "content": "Hi"}], "stop": [LONE]}, "stop"),
    ],
    ids=["content", "content-part", "stop"],
)
def test_openai_chat(server: RunningServer, body: dict[str, Any], param: str) -> None:
    assert_openai_400(post(server, "/v1/chat/completions", {"model": MODEL, "max_tokens": 4, **body}), param)


@pytest.mark.parametrize("prompt", [LONE, ["fine", f"a{LONE}b"]], ids=["string", "list"])
def test_openai_completions(server: RunningServer, prompt: Any) -> None:
    assert_openai_400(post(server, "/v1/completions", {"model": MODEL, "max_tokens": 4, "prompt": prompt}), "prompt")


def test_openai_streamed_request_is_refused_before_the_stream(server: RunningServer) -> None:
    body = {"model": MODEL, "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": LONE}]}
    assert_openai_400(post(server, "/v1/chat/completions", body), "messages.0.content")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"instructions": LONE, "input": "Hi"}, "instructions"),
        ({"instructions": "Be brief.", "input": [{"role": "user", "content": LONE}]}, "input.0.content"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": LONE}]}]}, "input.0.content.0.text"),
    ],
    ids=["instructions", "item", "part"],
)
def test_responses_names_its_own_field(server: RunningServer, body: dict[str, Any], param: str) -> None:
    """Its instructions become a system message before the items: the error still says where."""
    assert_openai_400(post(server, "/v1/responses", {"model": MODEL, "max_output_tokens": 16, **body}), param)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"system": LONE, "messages": [{"role": "user", "content": "Hi"}]}, "system"),
     ({"system": "Be brief.", "messages": [{"role": "user", "content": LONE}]}, "messages.0.content")],
    ids=["system", "message"],
)
def test_anthropic_names_its_own_field(server: RunningServer, body: dict[str, Any], field: str) -> None:
    response = post(server, "/v1/messages", {"model": MODEL, "max_tokens": 4, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(f"{field} is not valid text")
    assert not any(leak in response.text for leak in LEAKS)


def test_kserve_rest(server: RunningServer) -> None:
    tensor = {"name": "pre_prompt", "shape": [1], "datatype": "BYTES", "data": [LONE]}
    for body in ({"inputs": [tensor]},
                 {"inputs": [{**tensor, "data": ["Hi"]}], "parameters": {"stop": LONE}}):
        response = post(server, f"/v2/models/{MODEL}/infer", body)
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"} and not any(leak in response.text for leak in LEAKS)
        assert "lone UTF-16 surrogate" in response.json()["error"], response.text  # not the parser's "hex escape"


def test_grpc(server: RunningServer) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="pre_prompt", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(pack_bytes([LONE.encode("utf-8", "surrogatepass")]))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in caught.value.details()
        stream = list(stub.ModelStreamInfer(iter([request]), timeout=30))
    assert len(stream) == 1 and stream[0].error_message.startswith("INVALID_ARGUMENT")


def test_the_server_still_answers(server: RunningServer) -> None:
    response = post(server, "/v1/chat/completions", {"model": MODEL, "max_tokens": 8, "temperature": 0,
                                                     "messages": [{"role": "user", "content": "Say hi."}]})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
