"""The OpenAI wire format: requests, responses and stream chunks as pydantic models.

Field names are OpenAI's, verbatim, so the official SDKs work unchanged. Types are strict
(``"5"`` is not an integer) and ranges are checked here, so a bad request is a 400 naming
the field before anything is queued. A field vinolm does not act on is a 400 naming it
(code ``unsupported_parameter``), whether OpenAI defines it (``functions``, ``audio``, ...)
or nobody does; the few that change nothing for a local server (``user``, ``metadata``,
``store: false``, ...) are accepted as documented no-ops (:data:`INERT`). vinolm's own
sampling knobs live in :class:`VinolmExtensions`, and the structured-output fields users
already send to vLLM (``guided_*``, ``structured_outputs``) in :class:`GuidedDecoding`,
kept apart so it is clear what is not OpenAI's.

Each request model owns its translation to :mod:`vinolm.types`; nothing here knows about
engines or OpenVINO.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import BaseModel, Field

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.prompts.tools import check_tool_turns
from vinolm.server.openai.structured import (
    INERT,
    FunctionCall,
    GuidedDecoding,
    NamedToolChoice,
    ToolCallItem,
    ToolDefinition,
    ToolPlan,
    Wire,
    unique_tools,
    unsupported,
)
from vinolm.types import SPECULATION_LIMIT, Constraint, GenerationParams, Message, Request, Tool, ToolCall

OPENAI_DEFAULT_TEMPERATURE = 1.0
#: OpenAI's legacy completions endpoint answers 16 tokens unless told otherwise.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class StreamOptions(Wire):
    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")


class VinolmExtensions(Wire):
    """Sampling settings beyond the OpenAI API (the names vLLM uses for them)."""

    top_k: int = Field(0, ge=-1, description="vinolm extension: sample among the k most likely tokens; 0 or -1 = off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0,
                         description="vinolm extension: drop tokens less likely than min_p x the top token's probability.")
    repetition_penalty: float = Field(1.0, gt=0.0,
                                      description="vinolm extension: > 1 discourages repeating tokens already seen; 1 = off.")
    ignore_eos: bool = Field(False, description="vinolm extension: keep generating past end-of-sequence (benchmarks).")
    num_assistant_tokens: int = Field(0, ge=0, le=SPECULATION_LIMIT, description=(
        "vinolm extension: tokens proposed per step on a server started with --prompt-lookup or "
        "--draft-model; 0 = the server's setting."))
    max_ngram_size: int = Field(0, ge=0, le=SPECULATION_LIMIT, description=(
        "vinolm extension: longest prompt n-gram matched on a server started with --prompt-lookup; "
        "0 = the server's setting."))


class _SamplingRequest(VinolmExtensions, GuidedDecoding):
    """What completions and chat completions share."""

    model: str | None = Field(None, description="A served model name (GET /v1/models); default: the first one.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy; default 1.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128, description="How many choices to generate.")
    stop: str | list[str] | None = Field(None, description="Up to 16 strings that end generation (not returned).")
    seed: int | None = Field(None, ge=0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Accepted, not used (a local server has no end users to track).")
    metadata: dict[str, str] | None = Field(None, description="Accepted, not used (nothing is stored).")
    prompt_cache_key: str | None = Field(None, description="Accepted, not used: prompt prefixes are cached anyway.")
    safety_identifier: str | None = Field(None, description="Accepted, not used.")

    def check_supported(self, where: str = "", inert: frozenset[str] = frozenset(INERT)) -> None:
        for name, value in (self.model_extra or {}).items():
            accepted = INERT.get(name)
            if accepted is not None and not any(value == v and type(value) is type(v) for v in accepted):
                shown = ", ".join("null" if v is None else json.dumps(v) for v in accepted)
                raise unsupported(name, f"the only value accepted is {shown}" if len(accepted) == 1
                                  else f"the values accepted (as no-ops) are {shown}")
        super().check_supported(where, inert)
        if self.stream_options is not None and not self.stream:  # as OpenAI: it would change nothing
            raise InvalidRequest("stream_options is only allowed when stream is true", param="stream_options")

    def constraint(self, tool_constraint: Constraint | None = None) -> tuple[str, Constraint] | None:
        """The one output constraint (with the field it came from); two at once are a 400,
        except that ``tool_choice: auto`` yields to the request's own (its answer is then free
        text under that constraint, calls recognised afterwards, as before auto had one)."""
        found = self.constraints()
        if tool_constraint is not None and not (found and tool_constraint.kind == "tool_calls"):
            found.append(("tools", tool_constraint))
        if len(found) > 1:
            names = " and ".join(param for param, _ in found)
            raise InvalidRequest(f"give at most one output constraint; this request has {names}",
                                 param=found[1][0])
        return found[0] if found else None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def _stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16:
            raise InvalidRequest(f"stop takes at most 16 strings, got {len(stops)}", param="stop")
        return stops

    def _max_tokens(self, default: int) -> int:
        return self.max_tokens if self.max_tokens is not None else default

    def to_generation_params(self, default_max_tokens: int, logprobs: int = 0, top_logprobs: int = 0,
                             constraint: Constraint | None = None) -> GenerationParams:
        """Decoding settings with OpenAI's defaults (temperature 1); raises InvalidRequest."""
        temperature = OPENAI_DEFAULT_TEMPERATURE if self.temperature is None else self.temperature
        return GenerationParams(
            max_new_tokens=self._max_tokens(default_max_tokens),
            temperature=temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            stop=self._stops(),
            ignore_eos=self.ignore_eos,
            num_assistant_tokens=self.num_assistant_tokens,
            max_ngram_size=self.max_ngram_size,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            constraint=constraint,
        ).validated()


# -- completions ------------------------------------------------------------------------------
class CompletionRequest(_SamplingRequest):
    """POST /v1/completions. A list of prompts is answered with one choice per prompt (x n)."""

    prompt: str | list[str] = Field(..., description="The text to continue, or a list of texts.")
    logprobs: int | None = Field(None, ge=0, le=5,
                                 description="Log-probabilities of the chosen tokens and of the N most likely ones.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (default 16, as OpenAI).")

    @property
    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise InvalidRequest("prompt is an empty list", param="prompt")
        return prompts

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    def to_requests(self, default_max_tokens: int = COMPLETIONS_DEFAULT_MAX_TOKENS) -> list[Request]:
        """One Request per prompt, in order."""
        found = self.constraint()
        params = self.to_generation_params(default_max_tokens, logprobs=1 if self.wants_logprobs else 0,
                                           top_logprobs=self.logprobs or 0, constraint=found and found[1])
        requests = []
        for i, prompt in enumerate(self.prompts):
            if not prompt.strip():
                where = "prompt" if isinstance(self.prompt, str) else f"prompt.{i}"
                raise InvalidRequest(f"{where} is empty", param=where)
            requests.append(Request(prompt=prompt, params=params))
        return requests


# -- chat completions -------------------------------------------------------------------------
class ContentPart(Wire):
    type: str
    text: str | None = None


class ChatMessage(Wire):
    """One turn. ``developer`` is OpenAI's newer name for ``system`` and is treated as such;
    ``name`` is accepted and not used (chat templates have no place for it)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallItem] | None = Field(None, description="assistant: the calls it made.")
    tool_call_id: str | None = Field(None, description="tool: the call whose result this is.")
    refusal: str | None = Field(None, description="assistant: only null (vinolm never refuses on its own).")

    def to_message(self, where: str) -> Message:
        role = "system" if self.role == "developer" else self.role
        if self.refusal is not None:
            raise unsupported(f"{where}.refusal", "send the refusal text as content")
        if self.tool_calls and role != "assistant":
            raise InvalidRequest(f"{where}: only assistant messages carry tool_calls", param=f"{where}.tool_calls")
        if (role == "tool") != (self.tool_call_id is not None):
            raise InvalidRequest(f"{where}: tool_call_id belongs on (and only on) a tool message",
                                 param=f"{where}.tool_call_id")
        calls = []
        for j, item in enumerate(self.tool_calls or []):
            try:
                calls.append(ToolCall(item.id, item.function.name, item.function.arguments))
            except VinolmError as exc:
                exc.param = f"{where}.tool_calls.{j}.function"
                raise
        return Message(role, self._text(where, bool(calls)), tool_calls=calls, tool_call_id=self.tool_call_id)

    def _text(self, where: str, has_calls: bool) -> str:
        if self.content is None:
            if self.role != "assistant":
                raise InvalidRequest(f"{where}.content is missing", param=f"{where}.content")
            if not has_calls:
                raise InvalidRequest(f"{where} has neither content nor tool_calls", param=f"{where}.content")
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for j, part in enumerate(self.content):
            if part.type == "text" and part.text is None:
                raise InvalidRequest(f"{where}.content.{j}.text: Field required", param=f"{where}.content.{j}.text")
            if part.type != "text":
                raise InvalidRequest(
                    f"{where}.content.{j} has type {part.type!r}; only text content is supported",
                    param=f"{where}.content.{j}.type")
            texts.append(part.text)
        return "".join(texts)


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions, formatted with the model's own chat template."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens; wins if both are given.")
    logprobs: bool = Field(False, description="Return the chosen tokens' log-probabilities.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="With logprobs: the N most likely tokens at each step.")
    tools: list[ToolDefinition] | None = Field(None, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="none | auto (the default with tools) | required | {type: function, function: {name}}.")
    parallel_tool_calls: bool | None = Field(None, description="With tool_choice required: allow several calls "
                                                               "(default true).")

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs

    def _max_tokens(self, default: int) -> int:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return super()._max_tokens(default)

    def tool_plan(self) -> ToolPlan:
        tools = tuple(self._tools())
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            if choice.function.name not in {t.name for t in tools}:
                offered = ", ".join(t.name for t in tools) or "none"
                raise InvalidRequest(f"tool_choice names {choice.function.name!r}, which is not in tools "
                                     f"(offered: {offered})", param="tool_choice")
            return ToolPlan(tools, "named", choice.function.name, parallel=False)
        mode = choice or ("auto" if tools else "none")
        if mode != "none" and not tools:
            raise InvalidRequest(f"tool_choice {mode!r} needs tools", param="tool_choice")
        if self.parallel_tool_calls is not None and not tools:
            raise InvalidRequest("parallel_tool_calls is only allowed when tools are given",
                                 param="parallel_tool_calls")
        parallel = self.parallel_tool_calls is not False
        return ToolPlan(tools, mode, parallel=parallel) if mode != "none" else ToolPlan()  # type: ignore[arg-type]

    def _tools(self) -> list[Tool]:
        tools: list[Tool] = []
        for i, item in enumerate(self.tools or []):
            fn = item.function
            try:
                tool = Tool(fn.name, fn.description or "", fn.parameters if fn.parameters is not None
                            else {"type": "object", "properties": {}})
            except VinolmError as exc:
                exc.param = f"tools.{i}.function"
                raise
            tools.append(tool)
        return unique_tools(tools, inner="function.")

    def to_request(self, default_max_tokens: int, plan: ToolPlan) -> Request:
        messages = [m.to_message(f"messages.{i}") for i, m in enumerate(self.messages)]
        check_tool_turns(messages)  # the engine checks again; here it is a 400 before anything is queued
        if plan.offered:
            messages = _offer(messages, list(plan.tools))
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        found = self.constraint(plan.constraint())
        params = self.to_generation_params(default_max_tokens, logprobs=1 if self.wants_logprobs else 0,
                                           top_logprobs=self.top_logprobs or 0, constraint=found and found[1])
        return Request(messages=messages, params=params)


def _offer(messages: list[Message], tools: list[Tool]) -> list[Message]:
    """Tools ride on the first system message (a new, empty one if there is none)."""
    if messages[0].role == "system":
        first = messages[0]
        return [Message("system", first.content, tools=tools), *messages[1:]]
    return [Message("system", "", tools=tools), *messages]


# -- responses --------------------------------------------------------------------------------
FinishReason = Literal["stop", "length", "tool_calls"]


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class CompletionStreamResponse(CompletionResponse):
    """Stream chunks of completions have the same shape as the whole response."""


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = Field(None, exclude_if=lambda v: v is None)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class DeltaFunction(BaseModel):
    name: str | None = Field(None, exclude_if=lambda v: v is None)
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    """A piece of a streamed call: the first one has its id, type and name."""

    index: int
    id: str | None = Field(None, exclude_if=lambda v: v is None)
    type: Literal["function"] | None = Field(None, exclude_if=lambda v: v is None)
    function: DeltaFunction


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = Field(None, exclude_if=lambda v: v is None)


class ChatStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "vinolm"
    state: str | None = Field(None, description="vinolm extension: loaded, loading, unloaded or failed.")
    task: str | None = Field(None, description="vinolm extension: chat or embedding (null until the model is prepared).")
    loads: int | None = Field(None, description="vinolm extension: times the model was loaded since the start.")
    load_seconds: float | None = Field(None, description="vinolm extension: how long its last load took "
                                                         "(reading, compiling), what its first request waited.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
