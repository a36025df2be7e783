"""KServe v2 protobuf messages <-> the transport-free tensors of ``kserve.tensors``.

Inputs may come as ``contents.bytes_contents`` or as ``raw_input_contents`` (4-byte
length-prefixed BYTES); outputs always go out as ``raw_output_contents``, as Triton and
OVMS send them, which every standard client decodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vinolm.errors import InvalidRequest
from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.kserve.protocol import VERSION
from vinolm.server.kserve.tensors import InputTensor, OutputTensor, check_tensor_parameters, unpack_bytes


def input_tensors(request: pb.ModelInferRequest) -> list[InputTensor]:
    """Each input with its BYTES elements, from typed contents or the raw field."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "use it for every input or for none"
        )
    for output in request.outputs:
        check_tensor_parameters(f"output {output.name!r}", parameters(output.parameters), "binary_data")
    tensors = []
    for index, tensor in enumerate(request.inputs):
        check_tensor_parameters(f"input {tensor.name!r}", parameters(tensor.parameters), "binary_data_size")
        typed = [field.name for field, _ in tensor.contents.ListFields() if field.name != "bytes_contents"]
        if typed:
            raise InvalidRequest(f"input {tensor.name!r} has {typed[0]}: its text goes in bytes_contents "
                                 "(or raw_input_contents)", param=tensor.name)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"input {tensor.name!r} has both contents and raw_input_contents")
            elements = unpack_bytes(raw[index], f"raw_input_contents[{index}]") if tensor.datatype == "BYTES" else []
        else:
            elements = list(tensor.contents.bytes_contents)
        tensors.append(InputTensor(tensor.name, tensor.datatype, list(tensor.shape), elements))
    return tensors


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as plain Python values."""
    values: dict[str, Any] = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        if kind is None:
            raise InvalidRequest(f"parameter {key!r} has no value", param=key)
        values[key] = getattr(param, kind)
    return values


def set_parameters(target: Any, values: Mapping[str, bool | int | str]) -> None:
    """Fill a protobuf parameter map from plain values."""
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        else:
            target[key].string_param = value


def infer_response(
    model: str, request_id: str, outputs: list[OutputTensor],
    params: Mapping[str, bool | int | str] | None = None,
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model, model_version=VERSION, id=request_id)
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(tensor.raw())
    if params:
        set_parameters(response.parameters, params)
    return response
