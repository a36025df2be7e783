"""Plain data passed between layers. No OpenVINO, no pydantic: every layer may import this."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from vinolm.errors import InvalidRequest

Role = Literal["system", "user", "assistant", "tool"]
ConstraintKind = Literal["json_schema", "json_object", "regex", "grammar", "choice", "tool_calls"]
CONSTRAINT_KINDS: tuple[str, ...] = ("json_schema", "json_object", "regex", "grammar", "choice", "tool_calls")
FinishReason = Literal["stop", "length", "cancelled"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
#: OpenAI's rule for function names, which chat templates and tool parsers rely on.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The most tokens speculative decoding may propose a step, and the longest n-gram prompt
#: lookup may match, wherever a request, a flag or a bench row sets them.
SPECULATION_LIMIT = 64


@dataclass(frozen=True)
class Tool:
    """A function the model may call: ``parameters`` is the JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TOOL_NAME.fullmatch(self.name):
            raise InvalidRequest(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'", param="tools"
            )
        if not isinstance(self.parameters, dict):
            raise InvalidRequest(f"tool {self.name!r}: parameters must be a JSON Schema object", param="tools")
        if self.parameters.get("type", "object") != "object":  # a call's arguments are a JSON object
            raise InvalidRequest(f"tool {self.name!r}: parameters must describe an object (the call's "
                                 f"arguments), not type {self.parameters['type']!r}", param="tools")
        check_text(self.description, "tools")
        check_text(json.dumps(self.parameters, ensure_ascii=False), "tools")

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI / Hugging Face shape chat templates expect in their ``tools`` variable."""
        function: dict[str, Any] = {"name": self.name, "description": self.description,
                                    "parameters": self.parameters}
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made: ``arguments`` is a JSON object as text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str = "{}"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidRequest("a tool call needs a non-empty id", param="tool_calls")
        if not isinstance(self.name, str) or not TOOL_NAME.fullmatch(self.name):
            raise InvalidRequest(f"tool call name {self.name!r} is not a valid function name",
                                 param="tool_calls")
        try:
            value = json.loads(self.arguments)
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise InvalidRequest(f"tool call {self.id!r}: arguments must be a JSON object as text",
                                 param="tool_calls")
        check_text(json.dumps(value, ensure_ascii=False), "tool_calls")

    @property
    def parsed_arguments(self) -> dict[str, Any]:
        return json.loads(self.arguments)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Message:
    """One turn. Beyond ``role`` and ``content``, tool use adds three optional fields:
    ``tool_calls`` on an assistant turn (the calls it made), ``tool_call_id`` on a ``tool``
    turn (the call whose result ``content`` is), and ``tools`` on a system turn: the functions
    offered to the model. Tools travel with the instructions because that is where chat
    templates render them, so every engine formats them with the conversation it already gets.
    """

    role: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    tools: list[Tool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidRequest(
                f"unknown role {self.role!r}; use one of {', '.join(ROLES)}", param="role"
            )
        if not isinstance(self.content, str):
            raise InvalidRequest("message content must be a string", param="content")
        if self.tool_calls and self.role != "assistant":
            raise InvalidRequest("only assistant messages carry tool_calls", param="tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise InvalidRequest("a tool message needs tool_call_id, and only a tool message has one",
                                 param="tool_call_id")
        if self.tools and self.role != "system":
            raise InvalidRequest("tools are offered on a system message", param="tools")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.tools:
            data["tools"] = [tool.to_dict() for tool in self.tools]
        return data


@dataclass(frozen=True)
class Constraint:
    """What an answer must match, enforced token by token while sampling, so the output is
    valid by construction rather than retried or repaired.

    One field per kind: ``schema`` for ``json_schema`` (a JSON Schema as a dict),
    nothing for ``json_object`` (any JSON object), ``pattern`` for ``regex``, ``grammar`` for
    ``grammar`` (GBNF, the EBNF dialect of llama.cpp and xgrammar), ``choices`` for ``choice``
    (the answer is exactly one of the strings). ``tool_calls`` (``tool_choice: auto``) is free
    text or, once the model starts a call in its family's ``tool_format`` (Hermes
    ``<tool_call>``, Mistral ``[TOOL_CALLS]``, a Llama 3 JSON answer), calls that fit
    ``schema`` (one call, or an array of calls: ``prompts.tools.calls_schema``). Every
    protocol translates its own request fields into this one type; each engine compiles it
    (``vinolm.engines.constraints``).
    """

    kind: ConstraintKind
    schema: dict[str, Any] | None = None
    pattern: str | None = None
    grammar: str | None = None
    choices: tuple[str, ...] = ()
    tool_format: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise InvalidRequest(
                f"unknown constraint kind {self.kind!r}; use one of {', '.join(CONSTRAINT_KINDS)}",
                param="constraint",
            )
        given = {"schema": self.schema is not None, "pattern": self.pattern is not None,
                 "grammar": self.grammar is not None, "choices": bool(self.choices),
                 "tool_format": self.tool_format is not None}
        wanted = {"json_schema": ("schema",), "regex": ("pattern",), "grammar": ("grammar",),
                  "choice": ("choices",), "tool_calls": ("schema", "tool_format")}.get(self.kind, ())
        extra = [name for name, present in given.items() if present and name not in wanted]
        if extra:
            raise InvalidRequest(f"a {self.kind} constraint takes no {', '.join(extra)}", param=self.kind)
        missing = [name for name in wanted if not given[name]]
        if missing:
            raise InvalidRequest(f"a {self.kind} constraint needs {' and '.join(missing)}", param=self.kind)
        if self.schema is not None and not isinstance(self.schema, dict):
            raise InvalidRequest("a JSON schema must be an object", param="json_schema")
        for name in ("pattern", "grammar", "tool_format"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidRequest(f"{name} must be a non-empty string", param=self.kind)
        if not all(isinstance(c, str) and c for c in self.choices):
            raise InvalidRequest("choices must be non-empty strings", param="choice")


@dataclass
class GenerationParams:
    """Decoding settings shared by every engine.

    ``temperature == 0`` means greedy decoding, the way the OpenAI API treats it, so
    one number switches sampling on and off in every front end.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    num_beams: int = 1
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    logprobs: int = 0
    #: Most likely alternatives to report per generated token (OpenAI's ``top_logprobs``), 0-20.
    top_logprobs: int = 0
    #: Output constraint (JSON schema, JSON object, regex, grammar or choice); None = free text.
    constraint: Constraint | None = None
    #: Speculative decoding, on an engine loaded with it: tokens proposed per step (prompt
    #: lookup or the draft model) and the longest n-gram prompt lookup matches; 0 = the
    #: engine's own setting.
    num_assistant_tokens: int = 0
    max_ngram_size: int = 0

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def with_(self, **changes: Any) -> GenerationParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Keyword arguments that rebuild these params (the constraint stays a Constraint)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidRequest(f"unknown generation parameter(s): {', '.join(unknown)}")
        return cls(**data).validated()

    def validated(self) -> GenerationParams:
        """Raise InvalidRequest naming the first bad field; return self when all are sane."""
        _check_int(self.max_new_tokens, "max_new_tokens", low=1)
        _check_num(self.temperature, "temperature", low=0.0)
        _check_num(self.top_p, "top_p", low=0.0, low_open=True, high=1.0)
        _check_int(self.top_k, "top_k", low=0, high=2**31 - 1)
        _check_num(self.min_p, "min_p", low=0.0, high=1.0)
        _check_num(self.repetition_penalty, "repetition_penalty", low=0.0, low_open=True)
        _check_num(self.presence_penalty, "presence_penalty", low=-2.0, high=2.0)
        _check_num(self.frequency_penalty, "frequency_penalty", low=-2.0, high=2.0)
        _check_int(self.num_beams, "num_beams", low=1)
        _check_int(self.num_return_sequences, "num_return_sequences", low=1)
        _check_num(self.length_penalty, "length_penalty")
        _check_int(self.logprobs, "logprobs", low=0, high=20)
        _check_int(self.top_logprobs, "top_logprobs", low=0, high=20)
        _check_int(self.num_assistant_tokens, "num_assistant_tokens", low=0, high=64)
        _check_int(self.max_ngram_size, "max_ngram_size", low=0, high=64)
        if self.seed is not None:
            _check_int(self.seed, "seed", low=0, high=2**64 - 1)
        if self.num_beams > 1 and self.do_sample:
            raise InvalidRequest(
                "beam search is deterministic: use num_beams > 1 with temperature 0",
                param="num_beams",
            )
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise InvalidRequest(
                "num_return_sequences greater than num_beams needs sampling (temperature > 0)",
                param="num_return_sequences",
            )
        if not all(isinstance(s, str) and s for s in self.stop):
            raise InvalidRequest("stop strings must be non-empty strings", param="stop")
        for stop in self.stop:
            check_text(stop, "stop")
        if not all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids):
            raise InvalidRequest("stop token ids must be non-negative integers", param="stop")
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise InvalidRequest("constraint must be a vinolm.types.Constraint", param="constraint")
        return self


def check_text(text: str, param: str) -> str:
    """Refuse text no tokenizer can take: a JSON string may carry lone UTF-16 surrogates
    (``"\\ud800"``), which Python keeps in a ``str`` but UTF-8 cannot encode. Every request
    is built through here, so each protocol turns this into its own 4xx naming ``param``;
    a protocol whose fields are not the request's messages one for one checks them itself
    first, so the error names its own field."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"{param} is not valid text: it contains {text[exc.start:exc.end]!r} at character "
            f"{exc.start} (a lone UTF-16 surrogate)",
            param=param,
        ) from None
    return text


def _check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer, got {value!r}", param=name)
    if low is not None and value < low:
        raise InvalidRequest(f"{name} must be >= {low}, got {value}", param=name)
    if high is not None and value > high:
        raise InvalidRequest(f"{name} must be <= {high}, got {value}", param=name)


def _check_num(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}", param=name)
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise InvalidRequest(f"{name} must be {bound}, got {value}", param=name)
    if high is not None and value > high:
        raise InvalidRequest(f"{name} must be <= {high}, got {value}", param=name)


@dataclass
class Request:
    """One generation: either a raw prompt or a chat conversation, plus settings.

    ``prompt_ids`` lets callers that already tokenized (the chat budget, KServe) skip
    a second tokenization.
    """

    prompt: str | None = None
    messages: list[Message] | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    add_special_tokens: bool = True

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("give exactly one of prompt or messages")
        if self.prompt is not None:
            check_text(self.prompt, "prompt")
            if not self.prompt.strip():
                raise InvalidRequest("prompt is empty", param="prompt")
        if self.messages is not None and not self.messages:
            raise InvalidRequest("messages is empty", param="messages")
        for i, message in enumerate(self.messages or []):
            check_text(message.content, f"messages.{i}.content")


@dataclass
class Chunk:
    """A piece of streamed output for one sequence (``index`` > 0 with n > 1 or beams)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    index: int = 0
    finish_reason: FinishReason | None = None
    logprobs: list[float] | None = None
    #: Per token in ``token_ids``: the ``top_logprobs`` most likely (token id, log-probability)
    #: pairs, most likely first; None unless the request asked for them.
    top_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class Metrics:
    """Per-request measurements. Times in seconds; rates in tokens per second."""

    input_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    total_time: float = 0.0
    trimmed_messages: int = 0
    cached_tokens: int = 0
    #: Speculative decoding on the native engine: tokens proposed, and those the model chose too.
    draft_tokens: int = 0
    draft_accepted: int = 0

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first one."""
        if self.output_tokens <= 1:
            return 0.0
        return (self.total_time - self.ttft) / (self.output_tokens - 1)

    @property
    def decode_tokens_per_s(self) -> float:
        return 1.0 / self.tpot if self.tpot > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.input_tokens / self.ttft if self.ttft > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.total_time if self.total_time > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        data: dict[str, float | int] = asdict(self)
        data.update(
            tpot=self.tpot,
            decode_tokens_per_s=self.decode_tokens_per_s,
            prefill_tokens_per_s=self.prefill_tokens_per_s,
            tokens_per_s=self.tokens_per_s,
        )
        return data


@dataclass
class Result:
    """A finished generation: one text per returned sequence, and the metrics."""

    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[FinishReason]
    metrics: Metrics

    @property
    def text(self) -> str:
        return self.texts[0]
