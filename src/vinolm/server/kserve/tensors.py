"""The LLM demo's KServe v2 tensors, checked and converted once for REST and gRPC alike.

Both transports first reduce their wire form (JSON ``data``, the binary-tensor extension,
gRPC ``bytes_contents`` or ``raw_input_contents``) to :class:`InputTensor` with its
elements as raw bytes; everything after that - which tensor, which shape, valid UTF-8,
generation settings, the output tensors - is decided here, so the two transports cannot
drift apart. Bad input raises :class:`~vinolm.errors.InvalidRequest` naming the problem.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.types import Constraint, GenerationParams

INPUT = "pre_prompt"
COMPLETION = "completion"
#: ``token_count`` INT32 [1] is the whole request's generated tokens, as the OVMS demo's
#: clients print it ("Number of tokens"); ``token_counts`` INT32 [N] has them per prompt.
TOKEN_COUNT = "token_count"
TOKEN_COUNTS = "token_counts"
#: Output of the last response of a ModelStreamInfer request, as the OVMS demo sends it.
END_SIGNAL = "end_signal"
OUTPUTS: dict[str, str] = {COMPLETION: "BYTES", TOKEN_COUNT: "INT32", TOKEN_COUNTS: "INT32"}
#: Output shapes for the model metadata: one element per prompt, except the request total.
OUTPUT_SHAPES: dict[str, list[int]] = {COMPLETION: [-1], TOKEN_COUNT: [1], TOKEN_COUNTS: [-1]}

#: Request parameters that set generation, with the GenerationParams field each sets.
GENERATION_KEYS: dict[str, str] = {
    "max_tokens": "max_new_tokens",
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
    "ignore_eos": "ignore_eos",
    "num_assistant_tokens": "num_assistant_tokens",
    "max_ngram_size": "max_ngram_size",
}
#: Parameters standard clients send about the transport; accepted and not acted on.
#: The transport keys tritonclient sends (changing nothing here but the output layout), with
#: what each must hold.
_TRANSPORT_TYPES: dict[str, tuple[type, str]] = {
    "binary_data_output": (bool, "true or false"), "triton_enable_empty_final_response": (bool, "true or false"),
    "priority": (int, "an integer >= 0"), "timeout": (int, "an integer >= 0"),
}
TRANSPORT_KEYS = frozenset(_TRANSPORT_TYPES)


def check_transport(parameters: Mapping[str, Any]) -> None:
    """Transport keys hold what tritonclient sends, or the request is a 400: a value that is
    none (``binary_data_output: "yes"``) would otherwise be read as false, silently."""
    for key, (kind, what) in _TRANSPORT_TYPES.items():
        if key not in parameters:
            continue
        value = parameters[key]
        wrong = not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0))
        if wrong:
            raise InvalidRequest(f"{key} must be {what}, got {value!r}", param=key)


def check_tensor_parameters(where: str, parameters: Mapping[str, Any], allowed: str) -> None:
    """An input's or output's parameters: the one binary-data key it may carry, nothing else."""
    unknown = sorted(set(parameters) - {allowed})
    if unknown:
        raise InvalidRequest(f"{where} parameter {unknown[0]!r} is not supported (only {allowed})",
                             param="parameters")
#: ``chat: false`` sends the prompt to the model as is instead of as a user message.
CHAT_KEY = "chat"
#: Output constraints, at most one per request: ``json_schema`` (a JSON Schema, as an object
#: or as JSON text - gRPC parameters are scalars), ``regex``, ``grammar`` (GBNF / EBNF),
#: ``choices`` (a list of strings, or it as JSON text) and ``json_object`` (true: any JSON object).
CONSTRAINT_KEYS: tuple[str, ...] = ("json_schema", "regex", "grammar", "choices", "json_object")

_LENGTH = struct.Struct("<I")


@dataclass
class InputTensor:
    """One input tensor, transport removed: its elements are the raw BYTES items."""

    name: str
    datatype: str
    shape: list[int]
    elements: list[bytes]


@dataclass
class OutputTensor:
    """One output tensor; ``raw()`` gives the binary form, ``data`` the JSON form."""

    name: str
    datatype: str
    data: list[str] | list[int]

    @property
    def shape(self) -> list[int]:
        return [len(self.data)]

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            return pack_bytes([str(item).encode() for item in self.data])
        return struct.pack(f"<{len(self.data)}i", *self.data)


@dataclass
class Settings:
    """What the request parameters ask for."""

    params: GenerationParams
    chat: bool = True


def pack_bytes(items: Sequence[bytes]) -> bytes:
    """Serialize BYTES elements the KServe way: each preceded by its 4-byte LE length."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def unpack_bytes(blob: bytes, where: str) -> list[bytes]:
    """Split length-prefixed BYTES elements; a truncated blob is the client's error."""
    items: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + _LENGTH.size > len(blob):
            raise InvalidRequest(f"{where}: truncated length prefix at byte {offset}")
        (size,) = _LENGTH.unpack_from(blob, offset)
        offset += _LENGTH.size
        if offset + size > len(blob):
            raise InvalidRequest(
                f"{where}: element {len(items)} claims {size} bytes but only "
                f"{len(blob) - offset} remain"
            )
        items.append(bytes(blob[offset : offset + size]))
        offset += size
    return items


def decode_prompts(inputs: Sequence[InputTensor], name: str = INPUT) -> list[str]:
    """The N texts of the one ``pre_prompt`` (or, for an embedding model, ``text_input``) BYTES [N] input."""
    if len(inputs) != 1 or inputs[0].name != name:
        names = ", ".join(repr(t.name) for t in inputs) or "none"
        raise InvalidRequest(f"expected exactly one input named {name!r}, got {names}", param="inputs")
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidRequest(f"{name} must have datatype BYTES, got {tensor.datatype!r}", param=name)
    if len(tensor.shape) != 1 or tensor.shape[0] < 1:
        raise InvalidRequest(f"{name} must have shape [N] with N >= 1, got {tensor.shape}", param=name)
    if tensor.shape[0] != len(tensor.elements):
        raise InvalidRequest(
            f"{name} has shape {tensor.shape} but carries {len(tensor.elements)} element(s)", param=name
        )
    prompts = []
    for index, item in enumerate(tensor.elements):
        try:
            prompts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{name}[{index}] is not valid UTF-8 ({exc.reason})", param=name) from None
    return prompts


def encode_text(text: str, where: str) -> bytes:
    """UTF-8 of a JSON string; lone surrogates (``"\\ud800"``) are not text."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{where} is not valid UTF-8 text", param=INPUT) from None


def settings_from(parameters: Mapping[str, Any]) -> Settings:
    """Request parameters -> generation settings; unknown names are rejected by name."""
    unknown = sorted(set(parameters) - set(GENERATION_KEYS) - TRANSPORT_KEYS - {CHAT_KEY, *CONSTRAINT_KEYS})
    if unknown:
        raise InvalidRequest(
            f"unknown parameter(s): {', '.join(unknown)}; supported: {', '.join(sorted(GENERATION_KEYS))}, "
            f"{CHAT_KEY}, {', '.join(CONSTRAINT_KEYS)}",
            param="parameters",
        )
    check_transport(parameters)
    if "max_tokens" in parameters and "max_new_tokens" in parameters:
        raise InvalidRequest("give max_tokens or max_new_tokens, not both", param="max_tokens")
    values = {GENERATION_KEYS[key]: value for key, value in parameters.items() if key in GENERATION_KEYS}
    if "stop" in values:
        values["stop"] = _stop_list(values["stop"])
    for flag in (CHAT_KEY, "ignore_eos"):
        if flag in parameters and not isinstance(parameters[flag], bool):
            raise InvalidRequest(f"{flag} must be true or false, got {parameters[flag]!r}", param=flag)
    values["constraint"] = constraint_from(parameters)
    return Settings(params=GenerationParams.from_dict(values), chat=parameters.get(CHAT_KEY, True))


def constraint_from(parameters: Mapping[str, Any]) -> Constraint | None:
    """The one output constraint the parameters ask for; two at once, or a bad one, name it."""
    given = [key for key in CONSTRAINT_KEYS if key in parameters and parameters[key] is not False]
    if len(given) > 1:
        raise InvalidRequest(f"give at most one output constraint; got {' and '.join(given)}", param=given[1])
    if not given:
        return None
    key, value = given[0], parameters[given[0]]
    try:
        if key == "json_object":
            if value is not True:
                raise InvalidRequest(f"json_object must be true or false, got {value!r}")
            return Constraint("json_object")
        if key == "json_schema":
            return Constraint("json_schema", schema=_json_value(value, key, dict, "a JSON Schema object"))
        if key == "choices":
            choices = _json_value(value, key, list, "a list of strings")
            return Constraint("choice", choices=tuple(choices))
        if not isinstance(value, str):
            raise InvalidRequest(f"{key} must be a string, got {value!r}")
        return Constraint("regex", pattern=value) if key == "regex" else Constraint("grammar", grammar=value)
    except VinolmError as exc:
        exc.param = key
        raise


def _json_value(value: Any, key: str, kind: type, what: str) -> Any:
    """An object or list sent as is (REST) or as JSON text (gRPC's string parameter)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidRequest(f"{key} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise InvalidRequest(f"{key} must be {what}, got {type(value).__name__}")
    return value


def _stop_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise InvalidRequest(f"stop must be a string or a list of strings, got {value!r}", param="stop")


def requested_outputs(names: Sequence[str]) -> list[str]:
    """The outputs to send: the ones asked for (checked), or all when none are named."""
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InvalidRequest(
            f"unknown output(s): {', '.join(unknown)}; this model has {', '.join(OUTPUTS)}", param="outputs"
        )
    return list(dict.fromkeys(names)) or list(OUTPUTS)


def build_outputs(completions: list[str], token_counts: list[int], names: Sequence[str]) -> list[OutputTensor]:
    """``completion`` BYTES [N], ``token_count`` INT32 [1] (the total) and ``token_counts``
    INT32 [N], in the order asked for."""
    data: dict[str, list[str] | list[int]] = {
        COMPLETION: completions, TOKEN_COUNT: [sum(token_counts)], TOKEN_COUNTS: token_counts,
    }
    return [OutputTensor(name, OUTPUTS[name], data[name]) for name in names]
