"""KServe v2 REST shapes (pydantic) and the binary-tensor extension's body layout.

A request body is either plain JSON, or - when the ``Inference-Header-Content-Length``
header is present - that many bytes of JSON followed by the binary data of the inputs
whose ``parameters.binary_data_size`` says how many bytes each takes, in input order.
Responses use the same layout when the client asks for binary outputs (``binary_data``
on an output, or ``binary_data_output`` on the request), as tritonclient does by default.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vinolm import __version__
from vinolm.errors import InvalidRequest, UnknownModel
from vinolm.server.kserve.tensors import (
    INPUT,
    OUTPUT_SHAPES,
    OUTPUTS,
    InputTensor,
    OutputTensor,
    check_tensor_parameters,
    encode_text,
    unpack_bytes,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
T = TypeVar("T", bound="BaseModel")
BINARY_SIZE = "binary_data_size"
SERVER_NAME = "vinolm"
EXTENSIONS = ["binary_tensor_data", "parameters", "model_stream_infer"]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400, never ignored

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400, never ignored

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    """``POST /v2/models/{name}/infer``; generation settings go in ``parameters``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] = Field(default_factory=list)


class RepositoryIndex(BaseModel):
    """The body of ``POST /v2/repository/index`` (all optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    repository_name: str = ""
    ready: bool = False


class RepositoryModel(BaseModel):
    """The body of a model's ``load`` or ``unload``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    parameters: dict[str, Any] = Field(default_factory=dict)


def parse_repository_body(body: bytes, model: type[T]) -> T:
    """A repository request's JSON body; an empty one is all defaults (tritonclient sends none)."""
    if not body.strip():
        return model()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(f"malformed repository request: {_first_problem(exc)}") from None


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


#: Every served model's one version (KServe's versions list, the versioned routes).
VERSION = "1"


def check_version(name: str, version: str | None) -> None:
    """A version other than the one a model has is unknown (404 / NOT_FOUND), never ignored."""
    if version not in (None, "", VERSION):
        raise UnknownModel(f"model {name!r} has version {VERSION} only, not {version!r}", param="model_version")


def server_metadata_of() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


def model_metadata_of(name: str) -> ModelMetadata:
    """The demo's signature: ``pre_prompt`` BYTES [-1] in, ``completion`` and ``token_count`` out."""
    return ModelMetadata(
        name=name, versions=[VERSION], platform="openvino",
        inputs=[TensorMetadata(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[TensorMetadata(name=n, datatype=d, shape=OUTPUT_SHAPES[n]) for n, d in OUTPUTS.items()],
    )


def parse_body(body: bytes, header_length: str | None) -> tuple[InferRequest, list[InputTensor]]:
    """The request and its input tensors, from plain JSON or the binary-tensor layout."""
    json_part, binary = _split(body, header_length)
    try:
        request = InferRequest.model_validate_json(json_part)
    except ValidationError as exc:
        raise InvalidRequest(f"malformed inference request: {_first_problem(exc)}") from None
    for output in request.outputs:
        check_tensor_parameters(f"output {output.name!r}", output.parameters, "binary_data")
        if not isinstance(output.parameters.get("binary_data", False), bool):
            raise InvalidRequest(f"output {output.name!r} binary_data must be true or false, got "
                                 f"{output.parameters['binary_data']!r}", param="parameters")
    tensors = []
    offset = 0
    for item in request.inputs:
        check_tensor_parameters(f"input {item.name!r}", item.parameters, BINARY_SIZE)
        elements, offset = _elements(item, binary, offset)
        tensors.append(InputTensor(item.name, item.datatype, list(item.shape), elements))
    if offset != len(binary):
        raise InvalidRequest(
            f"the body has {len(binary) - offset} binary byte(s) that no input's {BINARY_SIZE} accounts for"
        )
    return request, tensors


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < size <= len(body):
        raise InvalidRequest(f"{HEADER_LENGTH} is {size} but the body has {len(body)} bytes")
    return body[:size], body[size:]


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{where} is not a field of a KServe v2 inference request"
    if error["type"] == "json_invalid" and "hex escape" in error["msg"]:  # the JSON parser's words for it
        position = error["msg"].rpartition(" at ")[2]
        return f"a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text, at {position}"
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _elements(item: RequestInput, binary: bytes, offset: int) -> tuple[list[bytes], int]:
    """One input's BYTES elements, and where the next input's binary data starts."""
    size = item.parameters.get(BINARY_SIZE)
    if size is None:
        if item.data is None:
            raise InvalidRequest(f"input {item.name!r} has neither data nor {BINARY_SIZE}", param=item.name)
        if not all(isinstance(value, str) for value in item.data):
            raise InvalidRequest(f"input {item.name!r}: data must be a flat list of strings", param=item.name)
        return [encode_text(value, f"{item.name}[{i}]") for i, value in enumerate(item.data)], offset
    if item.data is not None:
        raise InvalidRequest(f"input {item.name!r} has both data and {BINARY_SIZE}", param=item.name)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidRequest(f"input {item.name!r}: {BINARY_SIZE} must be a byte count, got {size!r}",
                             param=item.name)
    if offset + size > len(binary):
        raise InvalidRequest(
            f"input {item.name!r}: {BINARY_SIZE} {size!r} does not fit the {len(binary) - offset} "
            "binary byte(s) left", param=item.name,
        )
    if item.datatype != "BYTES":  # other datatypes have no length prefixes; rejected later by name
        return [], offset + size
    return unpack_bytes(binary[offset : offset + size], f"input {item.name!r}"), offset + size


def wants_binary(request: InferRequest, name: str) -> bool:
    """Per output ``binary_data`` wins; otherwise the request's ``binary_data_output``."""
    for output in request.outputs:
        if output.name == name and "binary_data" in output.parameters:
            return output.parameters["binary_data"] is True
    return request.parameters.get("binary_data_output") is True


def render(request: InferRequest, model: str, outputs: list[OutputTensor]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    described: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for tensor in outputs:
        entry = ResponseOutput(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if wants_binary(request, tensor.name):
            blob = tensor.raw()
            entry.parameters = {BINARY_SIZE: len(blob)}
            blobs.append(blob)
        else:
            entry.data = list(tensor.data)
        described.append(entry)
    response = InferResponse(model_name=model, id=request.id, outputs=described)
    header = json.dumps(response.model_dump(exclude_none=True)).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
