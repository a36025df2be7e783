"""The real server (``vinolm serve``, default model) over KServe v2 with standard clients:
the demo's curl call, tritonclient.http (binary tensors), tritonclient.grpc (unary and the
OVMS demo's streaming callback), vinolm's generated stubs (ModelStreamInfer), bad input,
unknown model, the API key, cancellation, and ``vinolm client`` for every protocol.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tests.e2e.conftest import API_KEY, RunningServer
from tritonclient.utils import InferenceServerException

from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from vinolm.server.kserve.tensors import pack_bytes

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
FRANCE = "What is the capital of France?"
PROMPTS = [FRANCE, "Name one primary color.", "Say hello in Spanish."]


def metric(server: RunningServer, sample: str) -> float:
    """One /metrics sample by its full name (labels included); 0 when not there yet."""
    for line in httpx.get(f"{server.base_url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def wait_idle(server: RunningServer, timeout: float = 3.0) -> float:
    """Seconds until the server reports no running request (fails after ``timeout``)."""
    start = time.perf_counter()
    while metric(server, "vinolm_requests_running") > 0:
        assert time.perf_counter() - start < timeout, "the generation was not cancelled"
        time.sleep(0.05)
    return time.perf_counter() - start


def stub_request(prompts: list[str], max_tokens: int, **params: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, id="req-1")
    request.inputs.add(name="pre_prompt", datatype="BYTES", shape=[len(prompts)])
    request.raw_input_contents.append(pack_bytes([p.encode() for p in prompts]))
    request.parameters["max_tokens"].int64_param = max_tokens
    for key, value in params.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
    return request


def triton_input(prompts: list[str], client: object) -> object:
    tensor = client.InferInput("pre_prompt", [len(prompts)], "BYTES")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.array([p.encode() for p in prompts], dtype=np.object_))
    return tensor


# -- REST --------------------------------------------------------------------------------------
def test_demo_curl_call_and_metadata(server: RunningServer) -> None:
    body = {"inputs": [{"name": "pre_prompt", "shape": [1], "datatype": "BYTES", "data": [FRANCE]}],
            "parameters": {"max_tokens": 24}}
    answer = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert answer.json()["model_name"] == MODEL
    assert outputs["completion"]["datatype"] == "BYTES" and outputs["completion"]["shape"] == [1]
    assert "Paris" in outputs["completion"]["data"][0]
    assert outputs["token_count"]["datatype"] == "INT32" and 0 < outputs["token_count"]["data"][0] <= 24

    get = lambda path: httpx.get(f"{server.base_url}{path}", timeout=10)
    assert get("/v2/health/live").status_code == get("/v2/health/ready").status_code == 200
    assert get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert get("/v2").json()["name"] == "vinolm"
    assert get(f"/v2/models/{MODEL}").json()["inputs"] == [{"name": "pre_prompt", "datatype": "BYTES", "shape": [-1]}]
    missing = httpx.post(f"{server.base_url}/v2/models/nope/infer", json=body, timeout=10)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    bad = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", timeout=10,
                     json={"inputs": [{**body["inputs"][0], "datatype": "FP32"}]})
    assert bad.status_code == 400 and "BYTES" in bad.json()["error"]
    for extra in ({"priority": 1}, {"inputs": [{**body["inputs"][0], "contents": {}}]}):
        unknown = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json={**body, **extra}, timeout=10)
        assert unknown.status_code == 400 and "is not a field of a KServe v2" in unknown.json()["error"], unknown.text
    tensor = body["inputs"][0]
    for extra, words in (({"inputs": [{**tensor, "parameters": {"foo": 1}}]}, "input 'pre_prompt' parameter 'foo'"),
                         ({"outputs": [{"name": "completion", "parameters": {"classification": 3}}]},
                          "output 'completion' parameter 'classification'"),
                         ({"outputs": [{"name": "completion", "parameters": {"binary_data": "yes"}}]},
                          "binary_data must be true or false"),
                         ({"parameters": {"binary_data_output": "yes"}}, "binary_data_output must be true or false"),
                         ({"parameters": {"priority": -5}}, "priority must be an integer >= 0"),
                         ({"parameters": {"timeout": "abc"}}, "timeout must be an integer >= 0"),
                         ({"inputs": [{"name": "pre_prompt", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": True}}]}, "must be a byte count")):
        ignored = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json={**body, **extra}, timeout=10)
        assert ignored.status_code == 400 and words in ignored.json()["error"], ignored.text
    many = {"inputs": [{**body["inputs"][0], "shape": [80], "data": [FRANCE] * 80}]}
    too_many = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json=many, timeout=10)
    assert too_many.status_code == 400 and "80 answers at once" in too_many.json()["error"]


def test_versioned_routes_serve_version_1_only(server: RunningServer) -> None:
    rest = triton_http.InferenceServerClient(server.base_url.removeprefix("http://"))
    assert rest.is_model_ready(MODEL, model_version="1") and rest.get_model_metadata(MODEL, "1")["name"] == MODEL
    answer = rest.infer(MODEL, [triton_input([FRANCE], triton_http)], model_version="1",
                        parameters={"max_tokens": 8})
    assert answer.as_numpy("completion")[0]
    with pytest.raises(InferenceServerException) as other:
        rest.infer(MODEL, [triton_input([FRANCE], triton_http)], model_version="2")
    assert "version 1 only, not '2'" in other.value.message()
    assert triton_grpc.InferenceServerClient(server.grpc_target).get_model_metadata("").name == MODEL


def test_tritonclient_http_binary_tensors(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.host_port)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    prompts = [FRANCE, "Name one primary color."]
    result = client.infer(MODEL, [triton_input(prompts, triton_http)], parameters={"max_tokens": 16})
    completions = result.as_numpy("completion")
    counts = result.as_numpy("token_counts")
    assert completions.shape == (2,) and counts.shape == (2,) and counts.dtype == np.int32
    assert "Paris" in completions[0].decode() and completions[1]
    assert all(0 < c <= 16 for c in counts)
    assert result.as_numpy("token_count").tolist() == [counts.sum()]  # the demo prints this one


# -- gRPC --------------------------------------------------------------------------------------
def test_tritonclient_grpc_unary_three_prompts(server: RunningServer) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    assert client.is_server_live() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL).outputs[0].name == "completion"
    result = client.infer(MODEL, [triton_input(PROMPTS, triton_grpc)], parameters={"max_tokens": 16})
    completions = [c.decode() for c in result.as_numpy("completion")]
    assert len(completions) == 3 and all(completions) and "Paris" in completions[0]
    counts = result.as_numpy("token_counts")
    assert [0 < c <= 16 for c in counts] == [True] * 3
    assert result.as_numpy("token_count").tolist() == [counts.sum()]


def test_stub_model_stream_infer(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        responses = list(stub.ModelStreamInfer(iter([stub_request(PROMPTS[:2], 20)]), timeout=60))
    assert not any(r.error_message for r in responses)
    kinds = [r.infer_response.outputs[0].name for r in responses]
    assert kinds[-2:] == ["token_count", "end_signal"] and set(kinds[:-2]) == {"completion"}
    assert len(kinds) > 4, "partial completions should arrive as they are generated"
    texts = ["", ""]
    for r in responses[:-2]:
        assert r.infer_response.id == "req-1" and list(r.infer_response.outputs[0].shape) == [2]
        pieces = triton_grpc.deserialize_bytes_tensor(r.infer_response.raw_output_contents[0])
        texts = [t + p.decode() for t, p in zip(texts, pieces)]
    assert "Paris" in texts[0] and texts[1]
    total, counts = (np.frombuffer(raw, dtype="<i4") for raw in responses[-2].infer_response.raw_output_contents)
    assert [o.name for o in responses[-2].infer_response.outputs] == ["token_count", "token_counts"]
    assert all(0 < c <= 20 for c in counts) and total.tolist() == [counts.sum()]
    assert responses[-1].infer_response.parameters["end_of_sequence"].bool_param
    only_counts = stub_request(PROMPTS[:1], 8)
    only_counts.outputs.add(name="token_counts")  # asked for: the counts alone, then the end signal
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        asked = list(stub.ModelStreamInfer(iter([only_counts]), timeout=60))
    assert [[o.name for o in r.infer_response.outputs] for r in asked] == [["token_counts"], ["end_signal"]]


def test_tritonclient_grpc_stream_like_the_ovms_demo(server: RunningServer) -> None:
    events: queue.Queue[tuple[object, object]] = queue.Queue()
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    client.async_stream_infer(MODEL, [triton_input([FRANCE], triton_grpc)], parameters={"max_tokens": 16})
    text, count = "", None
    while True:
        result, error = events.get(timeout=30)
        assert error is None, error
        if result.as_numpy("end_signal") is not None:
            break
        if result.as_numpy("token_count") is not None:
            count = int(result.as_numpy("token_count")[0])
        else:
            text += result.as_numpy("completion")[0].decode()
    client.async_stream_infer("nope", [triton_input([FRANCE], triton_grpc)])
    _, error = events.get(timeout=10)  # the stream reports the error and stays open
    client.stop_stream()
    assert "Paris" in text and count is not None and 0 < count <= 16
    assert "NOT_FOUND" in str(error)


def test_grpc_errors_become_status_codes(server: RunningServer) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    wrong = triton_grpc.InferInput("pre_prompt", [2], "INT32")
    wrong.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
    cases = [
        (lambda: client.infer(MODEL, [wrong]), "StatusCode.INVALID_ARGUMENT", "datatype BYTES"),
        (lambda: client.infer(MODEL, [triton_input([FRANCE], triton_grpc)], parameters={"max_tokenz": 4}),
         "StatusCode.INVALID_ARGUMENT", "max_tokenz"),
        (lambda: client.infer("nope", [triton_input([FRANCE], triton_grpc)]), "StatusCode.NOT_FOUND", "nope"),
        (lambda: client.is_model_ready("nope"), "StatusCode.NOT_FOUND", "nope"),
        (lambda: client.infer(MODEL, [triton_input([FRANCE] * 80, triton_grpc)]), "StatusCode.INVALID_ARGUMENT",
         "80 answers at once"),  # more than the server holds: no retry of a RESOURCE_EXHAUSTED would do
        (lambda: client.infer(MODEL, [triton_input([FRANCE], triton_grpc)], model_version="2"),
         "StatusCode.NOT_FOUND", "version 1 only, not '2'"),
        (lambda: client.get_model_metadata(MODEL, model_version="2"), "StatusCode.NOT_FOUND", "version 1 only"),
        (lambda: client.is_model_ready(MODEL, model_version="2"), "StatusCode.NOT_FOUND", "version 1 only"),
    ]
    for call, status, text in cases:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == status and text in caught.value.message()
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = stub_request([FRANCE], 4)
        request.raw_input_contents[0] = b"\x09\x00\x00\x00abc"  # length prefix longer than the data
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "claims 9 bytes" in caught.value.details()
        typed = pb.ModelInferRequest(model_name=MODEL)
        typed.inputs.add(name="pre_prompt", datatype="BYTES", shape=[1])
        typed.inputs[0].contents.bytes_contents.append(FRANCE.encode())
        typed.inputs[0].contents.int_contents.append(7)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(typed, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "int_contents" in caught.value.details()


def test_api_key_is_required(server_with_key: RunningServer) -> None:
    target = server_with_key.grpc_target
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        triton_grpc.InferenceServerClient(target).is_server_live()
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        triton_grpc.InferenceServerClient(target).is_server_live(headers={"authorization": "Bearer wrong"})
    assert triton_grpc.InferenceServerClient(target).is_server_live(headers={"x-api-key": API_KEY})
    assert triton_grpc.InferenceServerClient(target).is_server_live(headers={"authorization": f"Bearer {API_KEY}"})
    with grpc.insecure_channel(target) as channel:
        stream = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([stub_request([FRANCE], 4)]))
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    url = f"{server_with_key.base_url}/v2/models/{MODEL}/ready"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=server_with_key.headers, timeout=10).status_code == 200


def test_cancelled_stream_stops_the_generation(server: RunningServer) -> None:
    cancelled_before = metric(server, 'vinolm_requests_total{protocol="grpc",status="499"}')
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(iter([stub_request(PROMPTS, 1000, ignore_eos=True)]))
        next(call)
        assert metric(server, "vinolm_requests_running") == 3
        call.cancel()
    assert wait_idle(server) < 2.0
    assert metric(server, 'vinolm_requests_total{protocol="grpc",status="499"}') == cancelled_before + 3


def test_rest_client_disconnect_stops_the_generation(server: RunningServer) -> None:
    body = {"inputs": [{"name": "pre_prompt", "shape": [1], "datatype": "BYTES", "data": [FRANCE]}],
            "parameters": {"max_tokens": 1000, "ignore_eos": True}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json=body, timeout=httpx.Timeout(1.0))
    assert wait_idle(server) < 2.0


# -- vinolm client -----------------------------------------------------------------------------
def vinolm_client(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("vinolm")
    return subprocess.run([str(script), "client", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("mode", [["--protocol", "openai"], ["--protocol", "openai", "--stream"],
                                  ["--protocol", "kserve-rest"], ["--protocol", "grpc"],
                                  ["--protocol", "grpc", "--stream"]])
def test_vinolm_client(server: RunningServer, mode: list[str]) -> None:
    url = server.grpc_target if "grpc" in mode else server.host_port
    done = vinolm_client(*mode, "--url", url, "--max-tokens", "16", "-p", FRANCE, "-p", "Name one primary color.")
    assert done.returncode == 0, done.stderr
    answers = done.stdout.split("==== Prompt: ")[1:]
    assert [a.splitlines()[0] for a in answers] == [f"{FRANCE} ====", "Name one primary color. ===="]
    assert all(a.splitlines()[1].strip() for a in answers), done.stdout
    tokens = int(done.stdout.split("Number of tokens: ")[1].split()[0])
    assert 0 < tokens <= 32
    for line in ("Generated tokens per second: ", "Time per generated token: ", "Total time: "):
        assert line in done.stdout
    assert ("Number of responses: " in done.stdout) == ("--stream" in mode)
    assert ("First response time: " in done.stdout) == ("--stream" in mode)


def test_vinolm_client_sends_the_api_key(server_with_key: RunningServer) -> None:
    args = ["--protocol", "grpc", "--url", server_with_key.grpc_target, "--max-tokens", "4", "-p", FRANCE]
    refused = vinolm_client(*args)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    assert vinolm_client(*args, "--api-key", API_KEY).returncode == 0


def test_vinolm_client_at_the_wrong_port_says_which_is_which(server: RunningServer) -> None:
    http_port = server.base_url.removeprefix("http://")
    done = vinolm_client("--protocol", "grpc", "--url", http_port, "--retries", "0", "-p", "hi")
    assert done.returncode == 1 and done.stderr == (f"vinolm: error: {http_port} answers HTTP/1, not gRPC: vinolm "
                                                    "serve's gRPC port is its --grpc-port (9000 by default)\n")


def test_vinolm_client_errors_are_one_line() -> None:
    for protocol in ("openai", "kserve-rest", "grpc"):
        done = vinolm_client("--protocol", protocol, "--url", "127.0.0.1:1", "-p", "hi")
        assert done.returncode == 1 and done.stderr.startswith("vinolm: error: cannot connect"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    for protocol, url in (("grpc", "not a url"), ("openai", "ftp://127.0.0.1:8000"),
                          ("kserve-rest", "http://[::1"), ("openai", "127.0.0.1:99999"), ("grpc", "127.0.0.1:99999")):
        done = vinolm_client("--protocol", protocol, "--url", url, "-p", "hi")
        assert done.returncode == 2 and done.stderr.startswith("vinolm: error: bad --url"), (url, done.stderr)
    for args, words in ((["--protocol", "kserve-rest", "--stream"], "KServe REST does not stream"),
                        (["--max-tokens", "0"], "--max-tokens must be >= 1")):
        done = vinolm_client(*args, "-p", "hi")
        assert done.returncode == 2 and done.stdout == "" and words in done.stderr, done
