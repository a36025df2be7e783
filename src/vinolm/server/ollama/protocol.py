"""The Ollama REST API (``/api/*``) as pydantic models, with Ollama's field names verbatim.

Sampling settings travel in ``options`` as in Ollama, with Ollama's defaults when absent
(temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1; ``num_predict`` -1 = up to the
server's limit). Fields vinolm does not act on are a 400 naming them, except those that
change nothing here (:data:`INERT`). ``keep_alive`` is Ollama's: how long the model stays
loaded after this request (seconds, or a duration such as ``"5m"``; negative: for ever; 0 with
no prompt unloads it now), over the server's ``--keep-alive``. The requests own their
translation to :mod:`vinolm.types`.

Tools are Ollama's: ``tools`` (OpenAI's function shape) offered through the model's chat
template, the model free to answer or call (Ollama has no ``tool_choice``); an assistant
turn's ``tool_calls`` carry no ids in Ollama, so each gets one here and the ``tool`` turns
that follow answer them in order (``tool_name``, when given, must match).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.server.answer import refuse_unsupported, tool_plan, with_tools
from vinolm.server.openai.structured import ToolPlan, unique_tools
from vinolm.server.registry import FOREVER
from vinolm.types import Constraint, GenerationParams, Message, Request, Tool, ToolCall, check_text

API = "Ollama API"
#: Ollama's documented defaults for the options vinolm implements.
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}

#: Top-level fields that change nothing here, with the values accepted as no-ops.
INERT: dict[str, tuple[Any, ...]] = {
    "think": (False,), "logprobs": (False,), "top_logprobs": (0,), "images": (),
    "suffix": (), "template": (), "context": (), "truncate": (True,), "shift": (True,),
}
#: Options that change nothing at their default value; the rest of Ollama's options
#: (num_ctx, num_thread, mirostat, ...) are a 400 naming them.
_OPTIONS_INERT: dict[str, tuple[Any, ...]] = {
    "typical_p": (1.0,), "tfs_z": (1.0,), "mirostat": (0,), "repeat_last_n": (-1,), "num_keep": (),
}
_MESSAGE_INERT: dict[str, tuple[Any, ...]] = {"images": (), "thinking": ()}


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")


_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(-?)((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class _KeepAlive(_Wire):
    keep_alive: int | float | str | None = Field(
        None, description='How long the model stays loaded after this request: seconds or a duration ("5m", '
                          '"1h30m"); negative: for ever; 0: unload it when the request ends.')

    def keep_alive_seconds(self) -> float | None:
        """Seconds (:data:`~vinolm.server.registry.FOREVER` when negative), as Ollama reads them:
        a number is seconds, a string a Go duration; None when the request does not say."""
        value = self.keep_alive
        if value is None or value == "":
            return None
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
                seconds = float(text)
            elif match := _DURATION.fullmatch(text):
                seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(match.group(2)))
                seconds = -seconds if match.group(1) else seconds
            else:
                raise InvalidRequest(f"keep_alive takes seconds or a duration such as \"5m\" or \"1h30m\", got "
                                     f"{value[:40]!r}", param="keep_alive")
        else:
            seconds = float(value)
        return FOREVER if seconds < 0 else seconds


class Options(_Wire):
    """The options vinolm implements, with Ollama's names."""

    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy; default 0.8.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="0 = off; default 40.")
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    num_predict: int | None = Field(None, ge=-2, description="Most tokens to generate; -1 or -2 = the server's limit.")
    stop: list[str] | None = Field(None, max_length=16)
    seed: int | None = Field(None, ge=0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    def to_generation_params(self, max_tokens_limit: int, constraint: Constraint | None) -> GenerationParams:
        refuse_unsupported(self.model_extra or {}, _OPTIONS_INERT, API, "options.")
        if self.num_predict == 0:
            raise InvalidRequest("options.num_predict must be positive, or -1 for the server's limit",
                                 param="options.num_predict")
        chosen = {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in DEFAULTS.items()}
        num_predict = self.num_predict if self.num_predict is not None and self.num_predict > 0 else max_tokens_limit
        return GenerationParams(
            max_new_tokens=num_predict, temperature=chosen["temperature"], top_p=chosen["top_p"],
            top_k=chosen["top_k"], min_p=self.min_p or 0.0, repetition_penalty=chosen["repeat_penalty"],
            presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
            seed=self.seed, stop=list(self.stop or []), constraint=constraint,
        ).validated()


class _Generating(_KeepAlive):
    """What /api/generate and /api/chat share."""

    model: str = Field(..., min_length=1, description="A served model name (GET /api/tags).")
    stream: bool = Field(True, description="NDJSON lines as the answer grows (Ollama's default), or one object.")
    options: Options | None = None
    format: Literal["", "json"] | dict[str, Any] | None = Field(
        None, description='"json": any JSON object; a JSON Schema object: an answer that follows it.')

    def check_fields(self, max_tokens_limit: int) -> None:
        """Refuse what vinolm does not act on, also when the request only loads the model."""
        self._params(max_tokens_limit)

    def _params(self, max_tokens_limit: int) -> GenerationParams:
        refuse_unsupported(self.model_extra or {}, INERT, API)
        constraint = None
        if self.format == "json":
            constraint = Constraint("json_object")
        elif isinstance(self.format, dict) and self.format:
            constraint = Constraint("json_schema", schema=self.format)
        return (self.options or Options()).to_generation_params(max_tokens_limit, constraint)


class GenerateRequest(_Generating):
    """POST /api/generate: the prompt as one user turn of the model's chat format, or as is with ``raw``."""

    prompt: str | None = Field(None, description="Empty or absent: only load the model (done_reason load).")
    system: str | None = Field(None, description="A system message before the prompt.")
    raw: bool = Field(False, description="Send the prompt to the model as is, without its chat format.")

    @property
    def loads_only(self) -> bool:
        return not self.prompt

    def to_request(self, max_tokens_limit: int) -> Request:
        params = self._params(max_tokens_limit)
        assert self.prompt is not None
        if self.raw:
            if self.system:
                raise InvalidRequest("system cannot be combined with raw: true (raw sends the prompt as is)",
                                     param="system")
            return Request(prompt=self.prompt, params=params)
        system = [Message("system", self.system)] if self.system else []
        return Request(messages=[*system, Message("user", self.prompt)], params=params)


class CallFunction(_Wire):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallItem(_Wire):
    function: CallFunction


class ChatMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(None, description="Required, except on an assistant turn with tool_calls.")
    tool_calls: list[ToolCallItem] | None = Field(None, description="assistant: the calls it made.")
    tool_name: str | None = Field(None, description="tool: the tool whose result this is.")

    def to_message(self, where: str, pending: list[ToolCall]) -> Message:
        """The turn; ``pending`` holds the calls not answered yet (ids given here, in order)."""
        refuse_unsupported(self.model_extra or {}, _MESSAGE_INERT, API, f"{where}.")
        if self.tool_calls and self.role != "assistant":
            raise InvalidRequest(f"{where}: only assistant messages carry tool_calls", param=f"{where}.tool_calls")
        if self.content is None and not self.tool_calls:
            raise InvalidRequest(f"{where}.content: Field required", param=f"{where}.content")
        content = self.content or ""
        if self.role == "tool":
            return Message("tool", content, tool_call_id=self._answered(where, pending).id)
        calls = []
        for j, item in enumerate(self.tool_calls or []):
            try:
                calls.append(ToolCall(f"call_{where.split('.')[-1]}_{j}", item.function.name,
                                      json.dumps(item.function.arguments)))
            except VinolmError as exc:
                exc.param = f"{where}.tool_calls.{j}.function"
                raise
        pending += calls
        return Message(self.role, content, tool_calls=calls)

    def _answered(self, where: str, pending: list[ToolCall]) -> ToolCall:
        for call in pending:
            if self.tool_name is None or call.name == self.tool_name:
                pending.remove(call)
                return call
        wanted = f" to {self.tool_name!r}" if self.tool_name else ""
        raise InvalidRequest(f"{where} is a tool result, but no earlier assistant tool call{wanted} is unanswered",
                             param=f"{where}.tool_name" if self.tool_name else f"{where}.role")


class FunctionDefinition(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Wire):
    type: Literal["function"]
    function: FunctionDefinition

    def to_tool(self, where: str) -> Tool:
        refuse_unsupported(self.model_extra or {}, {}, API, f"{where}.")
        refuse_unsupported(self.function.model_extra or {}, {}, API, f"{where}.function.")
        fn = self.function
        try:
            return Tool(fn.name, fn.description or "", fn.parameters or {"type": "object", "properties": {}})
        except VinolmError as exc:
            exc.param = f"{where}.function"
            raise


class ChatRequest(_Generating):
    """POST /api/chat: the conversation in the model's own chat format."""

    messages: list[ChatMessage] | None = Field(None, description="Empty or absent: only load the model.")
    tools: list[ToolDefinition] | None = Field(None, description="Functions the model may call (it decides).")

    @property
    def loads_only(self) -> bool:
        return not self.messages

    def tool_plan(self) -> ToolPlan:
        tools = unique_tools([t.to_tool(f"tools.{i}") for i, t in enumerate(self.tools or [])], inner="function.")
        return tool_plan(tools, "auto" if tools else "none")

    def to_request(self, max_tokens_limit: int, plan: ToolPlan) -> Request:
        params = self._params(max_tokens_limit)
        if plan.offered and params.constraint is not None:
            raise InvalidRequest("format cannot be combined with tools", param="format")
        if plan.offered:  # calls in the model's own format, constrained as on every API
            params = params.with_(constraint=plan.constraint())
        pending: list[ToolCall] = []
        messages = [m.to_message(f"messages.{i}", pending) for i, m in enumerate(self.messages or [])]
        return Request(messages=with_tools(messages, plan), params=params)


class ModelRequest(_Wire):
    """POST /api/show: a model name. ``name`` is its older spelling."""

    model: str | None = None
    name: str | None = None

    @property
    def model_name(self) -> str:
        if not (self.model or self.name):
            raise InvalidRequest("model: Field required", param="model")
        return self.model or self.name  # type: ignore[return-value]

    def show_name(self) -> str:
        """The model /api/show describes; its other fields refused by name (``verbose``'s extra
        tokenizer and tensor details are not served here)."""
        refuse_unsupported(self.model_extra or {}, {"verbose": (False,)}, API)
        return self.model_name


#: Embedding fields that change nothing here (inputs longer than the model are cut anyway).
_EMBED_INERT: dict[str, tuple[Any, ...]] = {"truncate": (True,), "options": ()}


class EmbedRequest(ModelRequest, _KeepAlive):
    """POST /api/embed (``input``: a text or texts) and the older /api/embeddings (``prompt``)."""

    input: str | list[str] | None = None
    prompt: str | None = Field(None, description="/api/embeddings: the one text.")
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions (renormalised).")

    def texts(self, legacy: bool) -> list[str]:
        """The texts, checked: one ``prompt`` on /api/embeddings, ``input`` on /api/embed."""
        refuse_unsupported(self.model_extra or {}, _EMBED_INERT, API)
        field = "prompt" if legacy else "input"
        value = self.prompt if legacy else self.input
        other = self.input if legacy else self.prompt
        if other is not None:
            raise InvalidRequest(f"{'input' if legacy else 'prompt'} is not a field of this endpoint; send {field}",
                                 param="input" if legacy else "prompt")
        texts = [value] if isinstance(value, str) else list(value or [])
        if not texts:
            raise InvalidRequest(f"{field}: give a non-empty text" + ("" if legacy else " or list of texts"),
                                 param=field)
        for i, text in enumerate(texts):
            where = field if isinstance(value, str) else f"{field}.{i}"
            check_text(text, where)
            if not text.strip():
                raise InvalidRequest(f"{where} is empty", param=where)
        return texts


# -- answers ------------------------------------------------------------------------------------
class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = "openvino"
    family: str
    families: list[str]
    parameter_size: str = ""
    quantization_level: str


class ModelEntry(BaseModel):
    """One model of /api/tags and /api/ps (``expires_at``, ``size_vram`` only in ps)."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str | None = None
    size_vram: int | None = None
    context_length: int | None = None


class ModelList(BaseModel):
    models: list[ModelEntry]


class ShowResponse(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class Timings(BaseModel):
    """Ollama's counters on the last line: durations in nanoseconds."""

    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class OutputFunction(BaseModel):
    name: str
    arguments: dict[str, Any]


class OutputCall(BaseModel):
    function: OutputFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    tool_calls: list[OutputCall] | None = None


class GenerateResponse(BaseModel):
    model: str
    created_at: str
    response: str
    done: bool
    done_reason: str | None = None


class ChatResponse(BaseModel):
    model: str
    created_at: str
    message: AssistantMessage
    done: bool
    done_reason: str | None = None


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class LegacyEmbedResponse(BaseModel):
    embedding: list[float]


class VersionResponse(BaseModel):
    version: str


class ErrorResponse(BaseModel):
    error: str
