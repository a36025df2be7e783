"""KServe tensor handling without a server: every wire form in, every bad tensor out."""

from __future__ import annotations

import json
import struct

import pytest

from vinolm.errors import InvalidRequest
from vinolm.server.grpc import convert
from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.kserve.protocol import parse_body, render
from vinolm.server.kserve.tensors import (
    InputTensor,
    build_outputs,
    decode_prompts,
    encode_text,
    pack_bytes,
    requested_outputs,
    settings_from,
    unpack_bytes,
)
from vinolm.types import Constraint


def prompt_tensor(*items: bytes, shape: list[int] | None = None, name: str = "pre_prompt",
                  datatype: str = "BYTES") -> InputTensor:
    return InputTensor(name, datatype, [len(items)] if shape is None else shape, list(items))


def json_body(data: list[object], shape: list[int] | None = None, **extra: object) -> bytes:
    tensor = {"name": "pre_prompt", "shape": shape or [len(data)], "datatype": "BYTES", "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def binary_body(prompts: list[bytes], **request: object) -> tuple[bytes, str]:
    """The binary-tensor layout tritonclient.http sends by default."""
    blob = pack_bytes(prompts)
    tensor = {"name": "pre_prompt", "shape": [len(prompts)], "datatype": "BYTES",
              "parameters": {"binary_data_size": len(blob)}}
    header = json.dumps({"inputs": [tensor], **request}).encode()
    return header + blob, str(len(header))


# -- length-prefixed BYTES ----------------------------------------------------------------------
def test_pack_uses_4_byte_little_endian_lengths() -> None:
    assert pack_bytes([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert unpack_bytes(pack_bytes([b"ab", b"", "é".encode()]), "x") == [b"ab", b"", "é".encode()]


def test_pack_matches_tritonclient() -> None:
    utils = pytest.importorskip("tritonclient.utils")
    np = pytest.importorskip("numpy")
    items = [b"What is relativity?", "Ünïcode".encode()]
    assert pack_bytes(items) == utils.serialize_byte_tensor(np.array(items, dtype=np.object_)).item()


@pytest.mark.parametrize(("blob", "problem"), [
    (b"\x05\x00", "truncated length prefix"),
    (b"\x05\x00\x00\x00abc", "claims 5 bytes but only 3 remain"),
])
def test_unpack_rejects_truncated_data(blob: bytes, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        unpack_bytes(blob, "input")


# -- the pre_prompt tensor -----------------------------------------------------------------------
def test_decode_prompts_returns_text_in_order() -> None:
    assert decode_prompts([prompt_tensor(b"one", "二".encode())]) == ["one", "二"]


@pytest.mark.parametrize(("tensors", "problem"), [
    ([], "exactly one input named 'pre_prompt', got none"),
    ([prompt_tensor(b"x", name="prompt")], "got 'prompt'"),
    ([prompt_tensor(b"x"), prompt_tensor(b"y")], "exactly one input"),
    ([prompt_tensor(b"x", datatype="INT32")], "datatype BYTES, got 'INT32'"),
    ([prompt_tensor(b"x", shape=[1, 1])], r"shape \[N\] with N >= 1, got \[1, 1\]"),
    ([prompt_tensor(shape=[0])], r"N >= 1, got \[0\]"),
    ([prompt_tensor(b"x", shape=[])], r"shape \[N\]"),
    ([prompt_tensor(b"x", shape=[2])], r"shape \[2\] but carries 1 element"),
    ([prompt_tensor(b"x", b"y", shape=[1])], r"shape \[1\] but carries 2 element"),
    ([prompt_tensor(b"ok", b"\xff\xfe")], r"pre_prompt\[1\] is not valid UTF-8"),
])
def test_bad_tensors_are_named(tensors: list[InputTensor], problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        decode_prompts(tensors)


def test_lone_surrogate_from_json_is_not_utf8() -> None:
    with pytest.raises(InvalidRequest, match="not valid UTF-8"):
        encode_text("\ud800", "pre_prompt[0]")


# -- parameters ----------------------------------------------------------------------------------
def test_generation_settings_map_to_params() -> None:
    settings = settings_from({"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
                              "repetition_penalty": 1.1, "seed": 3, "stop": "END", "priority": 1})
    p = settings.params
    assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.seed, p.stop) == (
        7, 0.5, 0.9, 5, 1.1, 3, ["END"])
    assert settings.chat is True
    assert settings_from({"max_new_tokens": 9, "stop": ["a", "b"], "chat": False}).params.max_new_tokens == 9
    assert settings_from({"chat": False}).chat is False


@pytest.mark.parametrize(("parameters", "problem"), [
    ({"max_tokenz": 5, "temprature": 1}, "unknown parameter.*max_tokenz, temprature"),
    ({"max_tokens": 5, "max_new_tokens": 5}, "not both"),
    ({"max_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"max_tokens": "ten"}, "must be an integer"),
    ({"temperature": -1.0}, "temperature must be >= 0"),
    ({"top_p": 1.5}, "top_p must be <= 1"),
    ({"stop": 5}, "stop must be a string or a list of strings"),
    ({"chat": "yes"}, "chat must be true or false"),
    ({"ignore_eos": 1}, "ignore_eos must be true or false"),
])
def test_bad_parameters_are_named(parameters: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        settings_from(parameters)


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


@pytest.mark.parametrize(("parameters", "constraint"), [
    ({"json_schema": SCHEMA}, Constraint("json_schema", schema=SCHEMA)),
    ({"json_schema": json.dumps(SCHEMA)}, Constraint("json_schema", schema=SCHEMA)),  # gRPC: a string
    ({"regex": "[0-9]+"}, Constraint("regex", pattern="[0-9]+")),
    ({"grammar": 'root ::= "a"'}, Constraint("grammar", grammar='root ::= "a"')),
    ({"choices": ["yes", "no"]}, Constraint("choice", choices=("yes", "no"))),
    ({"choices": '["yes", "no"]'}, Constraint("choice", choices=("yes", "no"))),
    ({"json_object": True}, Constraint("json_object")),
    ({"json_object": False}, None),
    ({}, None),
])
def test_constraint_parameters_become_one_constraint(parameters: dict[str, object],
                                                     constraint: Constraint | None) -> None:
    assert settings_from(parameters).params.constraint == constraint


@pytest.mark.parametrize(("parameters", "param", "problem"), [
    ({"json_schema": "{oops"}, "json_schema", "json_schema is not valid JSON"),
    ({"json_schema": "[1]"}, "json_schema", "JSON Schema object"),
    ({"json_schema": 3}, "json_schema", "JSON Schema object"),
    ({"regex": ""}, "regex", "non-empty"),
    ({"regex": 4}, "regex", "regex must be a string"),
    ({"grammar": " "}, "grammar", "non-empty"),
    ({"choices": "yes"}, "choices", "choices is not valid JSON"),
    ({"choices": []}, "choices", "needs choices"),
    ({"choices": ["a", 1]}, "choices", "non-empty strings"),
    ({"json_object": "yes"}, "json_object", "true or false"),
    ({"regex": "a", "choices": ["a"]}, "choices", "at most one output constraint; got regex and choices"),
])
def test_bad_constraint_parameters_are_named(parameters: dict[str, object], param: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem) as info:
        settings_from(parameters)
    assert info.value.param == param


# -- outputs -------------------------------------------------------------------------------------
def test_outputs_default_to_all_and_unknown_ones_are_rejected() -> None:
    assert requested_outputs([]) == ["completion", "token_count", "token_counts"]
    assert requested_outputs(["token_count", "token_count"]) == ["token_count"]
    with pytest.raises(InvalidRequest, match="unknown output.*logits"):
        requested_outputs(["logits"])


def test_output_tensors_in_json_and_raw_form() -> None:
    completion, total, counts = build_outputs(["hé", "b"], [3, 70000], ["completion", "token_count", "token_counts"])
    assert (completion.datatype, completion.shape, completion.data) == ("BYTES", [2], ["hé", "b"])
    assert completion.raw() == pack_bytes(["hé".encode(), b"b"])
    # the OVMS demo's clients print token_count[0] as the request's "Number of tokens"
    assert (total.datatype, total.shape, total.data) == ("INT32", [1], [70003])
    assert (counts.datatype, counts.shape) == ("INT32", [2])
    assert counts.raw() == struct.pack("<2i", 3, 70000)


# -- REST bodies ---------------------------------------------------------------------------------
def test_json_body() -> None:
    request, tensors = parse_body(json_body(["What is the theory of relativity?"]), None)
    assert decode_prompts(tensors) == ["What is the theory of relativity?"]
    assert request.outputs == []


def test_binary_body() -> None:
    body, header_length = binary_body([b"first", b"zweite"], parameters={"max_tokens": 4})
    request, tensors = parse_body(body, header_length)
    assert decode_prompts(tensors) == ["first", "zweite"]
    assert request.parameters == {"max_tokens": 4}


@pytest.mark.parametrize(("body", "header_length", "problem"), [
    (b"{not json", None, "malformed inference request"),
    (b'{"inputs": [{"name": "pre_prompt"}]}', None, r"inputs\.0\.shape"),
    (json_body(["x"]), "abc", "must be an integer"),
    (json_body(["x"]), "100000", "is 100000 but the body has"),
    (json_body([1, 2]), None, "flat list of strings"),
    (json.dumps({"inputs": [{"name": "pre_prompt", "shape": [1], "datatype": "BYTES"}]}).encode(), None,
     "neither data nor binary_data_size"),
])
def test_bad_bodies_are_named(body: bytes, header_length: str | None, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        parse_body(body, header_length)


def test_binary_sizes_must_account_for_the_body() -> None:
    body, header_length = binary_body([b"abc"])
    with pytest.raises(InvalidRequest, match="1 binary byte.*no input"):
        parse_body(body + b"!", header_length)
    with pytest.raises(InvalidRequest, match="does not fit"):
        parse_body(body[:-1], header_length)
    header = json.loads(body[: int(header_length)])
    header["inputs"][0]["data"] = ["abc"]
    both = json.dumps(header).encode()
    with pytest.raises(InvalidRequest, match="both data and binary_data_size"):
        parse_body(both + body[int(header_length):], str(len(both)))


def test_render_json_and_binary_outputs() -> None:
    outputs = build_outputs(["hi"], [2], ["completion", "token_count"])
    request, _ = parse_body(json_body(["x"], id="r1"), None)
    content, header_length = render(request, "m", outputs)
    assert header_length is None
    assert json.loads(content) == {"model_name": "m", "id": "r1", "outputs": [
        {"name": "completion", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
        {"name": "token_count", "datatype": "INT32", "shape": [1], "data": [2]}]}

    request, _ = parse_body(json_body(["x"], parameters={"binary_data_output": True},
                                      outputs=[{"name": "token_count", "parameters": {"binary_data": False}}]), None)
    content, header_length = render(request, "m", outputs)
    assert header_length is not None
    header = json.loads(content[:header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 6}
    assert header["outputs"][1]["data"] == [2]
    assert content[header_length:] == pack_bytes([b"hi"])


# -- gRPC messages -------------------------------------------------------------------------------
def grpc_request(*, raw: list[bytes] | None = None, contents: list[bytes] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="pre_prompt", datatype="BYTES", shape=[2])
    if contents is not None:
        tensor.contents.bytes_contents.extend(contents)
    request.raw_input_contents.extend(raw or [])
    return request


def test_grpc_raw_input_contents_are_length_prefixed() -> None:
    tensors = convert.input_tensors(grpc_request(raw=[pack_bytes([b"a", "ß".encode()])]))
    assert decode_prompts(tensors) == ["a", "ß"]
    with pytest.raises(InvalidRequest, match="truncated"):
        convert.input_tensors(grpc_request(raw=[b"\x01\x00"]))


def test_grpc_bytes_contents() -> None:
    assert decode_prompts(convert.input_tensors(grpc_request(contents=[b"a", b"b"]))) == ["a", "b"]


def test_grpc_raw_contents_must_cover_every_input() -> None:
    with pytest.raises(InvalidRequest, match="2 entries for 1 inputs"):
        convert.input_tensors(grpc_request(raw=[b"", b""]))
    with pytest.raises(InvalidRequest, match="both contents and raw_input_contents"):
        convert.input_tensors(grpc_request(raw=[pack_bytes([b"a"])], contents=[b"a"]))


def test_grpc_parameters_of_every_kind() -> None:
    request = pb.ModelInferRequest()
    request.parameters["max_tokens"].int64_param = 5
    request.parameters["temperature"].double_param = 0.25
    request.parameters["stop"].string_param = "END"
    request.parameters["chat"].bool_param = False
    request.parameters["seed"].uint64_param = 7
    assert convert.parameters(request.parameters) == {
        "max_tokens": 5, "temperature": 0.25, "stop": "END", "chat": False, "seed": 7}
    request.parameters["empty"].Clear()
    with pytest.raises(InvalidRequest, match="'empty' has no value"):
        convert.parameters(request.parameters)
