"""The OpenAI wire format: requests, responses and stream chunks as pydantic models.

Field names are OpenAI's, verbatim, so the official SDKs work unchanged. Types are strict
(``"5"`` is not an integer) and ranges are checked here, so a bad request is a 400 naming
the field before anything is queued. Unknown fields are accepted (real clients send
extras) and the serving layer logs them. vinolm's own sampling knobs live in
:class:`VinolmExtensions`, kept apart so it is clear what is not OpenAI's.

Each request model owns its translation to :mod:`vinolm.types`; nothing here knows about
engines or OpenVINO.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest
from vinolm.types import GenerationParams, Message, Request

OPENAI_DEFAULT_TEMPERATURE = 1.0
#: OpenAI's legacy completions endpoint answers 16 tokens unless told otherwise.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class StreamOptions(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")


class VinolmExtensions(_Strict):
    """Sampling settings beyond the OpenAI API (the names vLLM uses for them)."""

    top_k: int = Field(0, ge=-1, description="vinolm extension: sample among the k most likely tokens; 0 or -1 = off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0,
                         description="vinolm extension: drop tokens less likely than min_p x the top token's probability.")
    repetition_penalty: float = Field(1.0, gt=0.0,
                                      description="vinolm extension: > 1 discourages repeating tokens already seen; 1 = off.")
    ignore_eos: bool = Field(False, description="vinolm extension: keep generating past end-of-sequence (benchmarks).")


class _SamplingRequest(VinolmExtensions):
    """What completions and chat completions share."""

    model_config = ConfigDict(strict=True, extra="allow")

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
    user: str | None = None

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

    def to_generation_params(self, default_max_tokens: int, logprobs: int = 0) -> GenerationParams:
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
            logprobs=logprobs,
        ).validated()


# -- completions ------------------------------------------------------------------------------
class CompletionRequest(_SamplingRequest):
    """POST /v1/completions. A list of prompts is answered with one choice per prompt (x n)."""

    prompt: str | list[str] = Field(..., description="The text to continue, or a list of texts.")
    logprobs: int | None = Field(None, ge=0, le=5,
                                 description="0 = the chosen tokens' log-probabilities (alternatives are not supported).")
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

    @property
    def top_logprobs_asked(self) -> int:
        return self.logprobs or 0

    def to_requests(self, default_max_tokens: int = COMPLETIONS_DEFAULT_MAX_TOKENS) -> list[Request]:
        """One Request per prompt, in order."""
        params = self.to_generation_params(default_max_tokens, logprobs=1 if self.wants_logprobs else 0)
        requests = []
        for i, prompt in enumerate(self.prompts):
            if not prompt.strip():
                where = "prompt" if isinstance(self.prompt, str) else f"prompt.{i}"
                raise InvalidRequest(f"{where} is empty", param=where)
            requests.append(Request(prompt=prompt, params=params))
        return requests


# -- chat completions -------------------------------------------------------------------------
class ContentPart(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    """One turn. ``developer`` is OpenAI's newer name for ``system`` and is treated as such."""

    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def to_message(self, where: str) -> Message:
        role = "system" if self.role == "developer" else self.role
        return Message(role, self._text(where))

    def _text(self, where: str) -> str:
        if self.content is None:
            if self.role != "assistant":
                raise InvalidRequest(f"{where}.content is missing", param=f"{where}.content")
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
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
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token (not supported: keep 0).")

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs

    @property
    def top_logprobs_asked(self) -> int:
        return self.top_logprobs or 0

    def _max_tokens(self, default: int) -> int:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return super()._max_tokens(default)

    def to_request(self, default_max_tokens: int) -> Request:
        messages = [m.to_message(f"messages.{i}") for i, m in enumerate(self.messages)]
        params = self.to_generation_params(default_max_tokens, logprobs=1 if self.wants_logprobs else 0)
        return Request(messages=messages, params=params)

    def to_requests(self, default_max_tokens: int) -> list[Request]:
        return [self.to_request(default_max_tokens)]


# -- responses --------------------------------------------------------------------------------
FinishReason = Literal["stop", "length"]


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


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


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


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


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
