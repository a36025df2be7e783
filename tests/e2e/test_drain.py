"""SIGTERM drains a real ``vinolm serve``: what a Kubernetes rolling update needs.

The streams already running finish whole; readiness turns false and new requests get 503
(HTTP, with Retry-After) or UNAVAILABLE (gRPC) at once, so a load balancer moves them;
then the process exits 0.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import grpc
import httpx
import pytest
from tests.e2e.conftest import start_server

from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from vinolm.server.kserve.tensors import pack_bytes

pytestmark = pytest.mark.slow
TOKENS = 160


def stream_completion(base: str, out: dict[str, object], started: threading.Event) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    pieces, usage = 0, None
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            if event.get("choices"):
                pieces += 1
                started.set()
            usage = event.get("usage") or usage
    out.update(pieces=pieces, usage=usage)


def test_sigterm_finishes_streams_refuses_new_work_and_exits_0() -> None:
    with start_server("--no-ui", "--drain-timeout", "60") as server:
        results: list[dict[str, object]] = [{}, {}]
        started = [threading.Event(), threading.Event()]
        streams = [threading.Thread(target=stream_completion, args=(server.base_url, results[i], started[i]))
                   for i in range(2)]
        for thread in streams:
            thread.start()
        assert all(event.wait(60) for event in started), server.tail()
        server.process.send_signal(signal.SIGTERM)

        deadline = time.monotonic() + 10
        while httpx.get(f"{server.base_url}/v2/health/ready", timeout=5).status_code == 200:
            assert time.monotonic() < deadline, "readiness stayed true after SIGTERM"
            time.sleep(0.05)
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 503
        refused = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=10,
                             json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert refused.json()["error"]["type"] == "service_unavailable"
        request = pb.ModelInferRequest(model_name="smollm2-135m")
        request.inputs.add(name="pre_prompt", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(pack_bytes([b"Hi"]))
        with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        for thread in streams:
            thread.join(120)
        for result in results:  # both streams ran to their last token
            assert result["usage"] and result["usage"]["completion_tokens"] == TOKENS, result  # type: ignore[index]
        assert server.process.wait(60) == 0, server.tail()
        assert any("draining: 2 request(s) in flight" in line for line in server.log), server.tail()
