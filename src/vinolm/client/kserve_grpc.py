"""Client for KServe v2 gRPC with vinolm's generated stubs: ModelInfer and ModelStreamInfer.

A stream answers a request with partial ``completion`` responses (element ``i`` is new
text of prompt ``i``), then ``token_count``, then an end response (``end_signal`` output
or ``end_of_sequence`` parameter), as in the OpenVINO Model Server LLM demo.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any

import grpc

from vinolm.client.common import (
    SESSION_METADATA,
    ClientError,
    OnText,
    Retryable,
    RunResult,
    Stopwatch,
    Target,
    retrying,
)
from vinolm.errors import InvalidRequest
from vinolm.server.kserve.tensors import COMPLETION, END_SIGNAL, INPUT, TOKEN_COUNTS, pack_bytes, unpack_bytes

if TYPE_CHECKING:
    from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[\w.-]+):(\d{1,5})$")


def run(target: Target, prompts: list[str], stream: bool, on_text: OnText | None = None) -> RunResult:
    from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc

    address = target.url.removeprefix("grpc://")
    match = _ADDRESS.match(address)
    if not match or not 0 < int(match.group(2)) <= 65535:
        raise InvalidRequest(f"bad --url {target.url!r}: gRPC needs HOST:PORT, e.g. 127.0.0.1:9000")
    metadata = [("authorization", f"Bearer {target.api_key}")] if target.api_key else []
    metadata += [(SESSION_METADATA, target.session)] if target.session else []
    request = infer_request(target, prompts)
    watch = Stopwatch()

    def once() -> RunResult:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            try:
                if stream:
                    return _stream(stub, request, metadata, prompts, watch, on_text)
                response = stub.ModelInfer(request, metadata=metadata)
            except grpc.RpcError as exc:
                raise _client_error(exc, address) from None
        completions = [item.decode() for item in output(response, COMPLETION)]
        return RunResult(prompts, completions, list(output(response, TOKEN_COUNTS)))

    result = retrying(target.retry, once)
    result.total_time = watch.elapsed()
    result.response_times = watch.gaps
    return result


def infer_request(target: Target, prompts: list[str]) -> pb.ModelInferRequest:
    """``pre_prompt`` BYTES [N] as raw length-prefixed contents, like tritonclient sends it."""
    from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=target.model)
    request.inputs.add(name=INPUT, datatype="BYTES", shape=[len(prompts)])
    request.raw_input_contents.append(pack_bytes([prompt.encode() for prompt in prompts]))
    if target.max_tokens is not None:
        request.parameters["max_tokens"].int64_param = target.max_tokens
    return request


def _stream(stub: Any, request: pb.ModelInferRequest, metadata: list[tuple[str, str]],
            prompts: list[str], watch: Stopwatch, on_text: OnText | None) -> RunResult:
    result = RunResult(prompts, [""] * len(prompts), [0] * len(prompts))
    try:
        return _read_stream(stub.ModelStreamInfer(iter([request]), metadata=metadata), result, watch, on_text)
    except grpc.RpcError as exc:
        if any(result.completions):  # part of the answer was shown: not safe to send again
            raise ClientError(f"the stream broke after part of the answer: {exc.details()}") from None
        raise


def _read_stream(call: Any, result: RunResult, watch: Stopwatch, on_text: OnText | None) -> RunResult:
    for message in call:
        if message.error_message:
            fresh = not any(result.completions)
            if fresh and message.error_message.startswith(_RETRY_CODES):
                raise Retryable(message.error_message)
            raise ClientError(message.error_message)
        response = message.infer_response
        names = {tensor.name for tensor in response.outputs}
        if END_SIGNAL in names or _flag(response, "end_of_sequence"):
            call.cancel()  # a server may keep the stream open for further requests
            break
        if TOKEN_COUNTS in names:
            result.token_counts = list(output(response, TOKEN_COUNTS))
        elif COMPLETION in names:
            watch.response()
            for index, piece in enumerate(output(response, COMPLETION)):
                if piece:
                    result.completions[index] += piece.decode()
                    if on_text:
                        on_text(index, piece.decode())
    return result


def _flag(response: pb.ModelInferResponse, name: str) -> bool:
    return name in response.parameters and response.parameters[name].bool_param


def output(response: pb.ModelInferResponse, name: str) -> list[bytes] | list[int]:
    """An output's elements, whether sent as raw_output_contents or as typed contents."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != name:
            continue
        if index < len(response.raw_output_contents):
            raw = response.raw_output_contents[index]
            if tensor.datatype == "BYTES":
                return unpack_bytes(raw, name)
            return list(struct.unpack(f"<{len(raw) // 4}i", raw))
        if tensor.datatype == "BYTES":
            return list(tensor.contents.bytes_contents)
        return list(tensor.contents.int_contents)
    raise ClientError(f"the response has no {name!r} output")


#: gRPC statuses that mean the server took nothing (gone, draining, full): safe to send again.
_RETRY_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


def _client_error(exc: grpc.RpcError, address: str) -> ClientError:
    """Raised before any text arrived (a stream's later failures come as error_message)."""
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and "Failed parsing HTTP/2" in details:
        return ClientError(f"{address} answers HTTP/1, not gRPC: vinolm serve's gRPC port is its --grpc-port "
                           "(9000 by default)")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Retryable(f"cannot connect to {address}: {details}; is `vinolm serve` running there?")
    if code.name in _RETRY_CODES:
        return Retryable(f"{code.name}: {details}")
    return ClientError(f"{code.name}: {details}")
