"""Ollama API <-> the registry and ModelService: model listings, embeddings, and answers
as NDJSON lines or one object.

A model is described from its OpenVINO folder (size on disk, weight format, architecture),
loaded or not, since vinolm has no Ollama manifest: ``digest`` is the SHA-256 of the
model's ``openvino_model.xml``. ``/api/tags`` lists every served name, ``/api/ps`` the
loaded ones (with the expiry their keep-alive gives; none for a model kept for good), and
``load_duration`` is the time a request waited for its model to load. A stream is answered
once its first chunk exists, so an error the engine finds at once is still an HTTP 4xx; a
later failure is an ``{"error": ...}`` line, which the ollama client raises as
``ResponseError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from vinolm import __version__
from vinolm.errors import InvalidRequest, VinolmError
from vinolm.models import PreparedModel
from vinolm.server.answer import Answer
from vinolm.server.ollama.protocol import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    LegacyEmbedResponse,
    ModelDetails,
    ModelEntry,
    ModelList,
    OutputCall,
    OutputFunction,
    ShowResponse,
    Timings,
    VersionResponse,
)
from vinolm.server.openai.protocol import ToolCallOut
from vinolm.server.openai.serving import EventStreamResponse, served_plan
from vinolm.server.registry import FOREVER, Registry, registry_of, service_for
from vinolm.server.service import ModelService

log = logging.getLogger("vinolm.ollama")
#: Renders one answer line: (text, done, answer, tool calls) -> the JSON object.
Line = Callable[[str, bool, Answer, list[ToolCallOut]], dict[str, Any]]
PROTOCOL = "ollama"
NDJSON = "application/x-ndjson"
_NS = 1_000_000_000


def now() -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    return _rfc3339(datetime.now(UTC))


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def timings(answer: Answer, load_s: float = 0.0) -> Timings:
    m = answer.metrics
    return Timings(total_duration=int((m.total_time + load_s) * _NS), load_duration=int(load_s * _NS),
                   prompt_eval_count=m.input_tokens, prompt_eval_duration=int(m.ttft * _NS),
                   eval_count=m.output_tokens, eval_duration=int(max(m.total_time - m.ttft, 0.0) * _NS))


def done_reason(answer: Answer) -> str:
    return "length" if answer.hit_length and not answer.calls else "stop"


def output_calls(calls: list[ToolCallOut]) -> list[OutputCall] | None:
    """OpenAI-shaped calls as Ollama's: no id, arguments as an object."""
    return [OutputCall(function=OutputFunction(name=c.function.name, arguments=json.loads(c.function.arguments)))
            for c in calls] or None


@cache
def _folder_facts(path: Path) -> tuple[int, str, str]:
    """Size on disk, digest and modification time of a model folder; read once per process."""
    xml = path / "openvino_model.xml"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    digest = hashlib.sha256(xml.read_bytes()).hexdigest() if xml.is_file() else ""
    modified = datetime.fromtimestamp(xml.stat().st_mtime if xml.is_file() else 0, UTC)
    return size, digest, _rfc3339(modified)


def _details(model: PreparedModel | None) -> ModelDetails:
    if model is None:
        return ModelDetails(family="unknown", families=["unknown"], quantization_level="UNKNOWN")
    family = str(model.config.get("model_type") or (model.entry.architecture if model.entry else "unknown"))
    level = str(model.info.get("weight_format", "unknown")).upper()
    return ModelDetails(family=family, families=[family], quantization_level=level)


def _capabilities(model: PreparedModel | None) -> list[str]:
    return ["embedding"] if model is not None and model.is_embedding else ["completion", "tools"]


class OllamaModels:
    """What /api/tags, /api/ps and /api/show say, from the registry: every served model,
    loaded or not (a loaded one describes its engine's folder)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @staticmethod
    def version() -> VersionResponse:
        return VersionResponse(version=__version__)

    def prepared(self, name: str) -> PreparedModel | None:
        service = self.registry.loaded(name)
        if service is not None:
            return service.engine.model  # type: ignore[no-any-return]
        return self.registry.resolve(name).prepared()

    def _entry(self, name: str) -> ModelEntry:
        model = self.prepared(name)
        size, digest, modified = _folder_facts(Path(model.path)) if model is not None else (0, "", _rfc3339(
            datetime.fromtimestamp(0, UTC)))
        return ModelEntry(name=name, model=name, modified_at=modified, size=size, digest=digest,
                          details=_details(model))

    def tags(self) -> ModelList:
        return ModelList(models=[self._entry(name) for name in self.registry.names])

    def ps(self) -> ModelList:
        """The loaded models, each with the moment its keep-alive runs out (none: kept)."""
        entries = []
        for model in self.registry.states():
            service: ModelService | None = model["service"]
            if model["state"] != "loaded" or service is None:
                continue
            keep = self.registry.keep_alive_of(model["name"])
            expires = None if keep == FOREVER or keep < 0 else _rfc3339(
                datetime.now(UTC) + timedelta(seconds=max(keep - (model["idle_seconds"] or 0.0), 0.0)))
            context = getattr(service.engine, "context_length", None)
            entries += [self._entry(name).model_copy(update={"size_vram": 0, "context_length": context,
                                                             "expires_at": expires}) for name in model["names"]]
        return ModelList(models=entries)

    def show(self, name: str) -> ShowResponse:
        self.registry.resolve(name)  # 404 listing the served names
        model = self.prepared(name)
        if model is None:
            raise InvalidRequest(f"model {name!r} is not prepared yet; it is prepared on its first request",
                                 param="model")
        details = _details(model)
        if model.is_embedding:
            template, stops, context = "", "", int(model.info.get("max_length") or 512)
        else:
            spec = model.chat_spec
            template, context = spec.chat_template or "", model.context_length
            stops = "\n".join(f'stop "{s}"' for s in spec.stop_strings)
        return ShowResponse(
            modelfile=f"# served by vinolm\nFROM {model.path}\n", parameters=stops, template=template,
            details=details, model_info={"general.architecture": details.family,
                                         f"{details.family}.context_length": context},
            capabilities=_capabilities(model), modified_at=_folder_facts(Path(model.path))[2])


def served_name(registry: Registry, name: str) -> str:
    """Ollama names a model's default tag ``:latest``: ``smollm2-135m:latest`` is ``smollm2-135m``."""
    bare = name.removesuffix(":latest")
    return bare if name not in registry.names and bare in registry.names else name


def unloaded(body: GenerateRequest | ChatRequest) -> JSONResponse:
    """The answer to Ollama's unload request (no prompt, ``keep_alive`` 0)."""
    if isinstance(body, GenerateRequest):
        answer: GenerateResponse | ChatResponse = GenerateResponse(
            model=body.model, created_at=now(), response="", done=True, done_reason="unload")
    else:
        answer = ChatResponse(model=body.model, created_at=now(), message=AssistantMessage(content=""), done=True,
                              done_reason="unload")
    return JSONResponse(answer.model_dump(exclude_none=True))


async def embed(request: HTTPRequest, body: EmbedRequest, legacy: bool) -> EmbedResponse | LegacyEmbedResponse:
    """/api/embed (or /api/embeddings with ``legacy``) through ModelService.embed; a chat
    model is a 400 naming the served models that embed."""
    texts = body.texts(legacy)
    keep = body.keep_alive_seconds()
    registry = registry_of(request)
    name = served_name(registry, body.model_name)
    started = time.perf_counter()
    service = await _embedding_service(request, name)
    if keep is not None:
        registry.keep(name, keep)
    load_s = time.perf_counter() - started
    result = await service.embed(texts, PROTOCOL, body.dimensions)
    vectors = [[float(x) for x in vector] for vector in result.vectors]
    if legacy:
        return LegacyEmbedResponse(embedding=vectors[0])
    return EmbedResponse(model=service.check_model(name), embeddings=vectors,
                         total_duration=int((time.perf_counter() - started) * _NS), load_duration=int(load_s * _NS),
                         prompt_eval_count=result.total_tokens)


async def _embedding_service(request: HTTPRequest, name: str) -> ModelService:
    registry = registry_of(request)
    try:
        return await service_for(request, name, "embed")
    except InvalidRequest:
        able = [n for n in registry.names if _capabilities(OllamaModels(registry).prepared(n)) == ["embedding"]]
        which = f"models that embed here: {', '.join(able)}" if able else "no served model embeds"
        raise InvalidRequest(f"model {name!r} is a chat model and does not embed; {which}", param="model") from None


class OllamaServing:
    """Generation on one model's service; ``load_s`` is how long the request waited for it."""

    def __init__(self, service: ModelService, load_s: float = 0.0) -> None:
        self.service = service
        self.load_s = load_s

    # -- generation ----------------------------------------------------------------------------
    async def generate(self, body: GenerateRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        if body.loads_only:
            body.check_fields(self.service.limits.max_tokens_limit)
            return JSONResponse(GenerateResponse(model=model, created_at=now(), response="", done=True,
                                                 done_reason="load").model_dump())

        def line(text: str, done: bool, answer: Answer, calls: list[ToolCallOut]) -> dict[str, Any]:
            return GenerateResponse(model=model, created_at=now(), response=text, done=done,
                                    done_reason=done_reason(answer) if done else None).model_dump(exclude_none=True)

        request = body.to_request(self.service.limits.max_tokens_limit)
        return await self._serve(Answer(self.service, request, PROTOCOL, max_tokens="options.num_predict"), body.stream, line, raw)

    async def chat(self, body: ChatRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        if body.loads_only:
            body.check_fields(self.service.limits.max_tokens_limit)
            return JSONResponse(ChatResponse(model=model, created_at=now(), message=AssistantMessage(content=""),
                                             done=True, done_reason="load").model_dump(exclude_none=True))

        def line(text: str, done: bool, answer: Answer, calls: list[ToolCallOut]) -> dict[str, Any]:
            message = AssistantMessage(content=text, tool_calls=output_calls(calls))
            return ChatResponse(model=model, created_at=now(), message=message, done=done,
                                done_reason=done_reason(answer) if done else None).model_dump(exclude_none=True)

        plan = served_plan(body.tool_plan(), self.service)
        request = body.to_request(self.service.limits.max_tokens_limit, plan)
        return await self._serve(Answer(self.service, request, PROTOCOL, plan, max_tokens="options.num_predict"), body.stream, line, raw)

    async def _serve(self, answer: Answer, stream: bool, line: Line, raw: HTTPRequest) -> Response:
        if not stream:
            if not await answer.complete(raw):
                return Response(status_code=499)
            return JSONResponse({**line(answer.content, True, answer, answer.calls),
                                 **timings(answer, self.load_s).model_dump()})
        if not await answer.start(raw):
            return Response(status_code=499)  # the client left before the first token
        response = EventStreamResponse(self._lines(answer, line), on_close=answer.close)
        response.headers["content-type"] = NDJSON  # the same close-on-disconnect stream, as NDJSON
        return response

    async def _lines(self, answer: Answer, line: Line) -> AsyncIterator[str]:
        try:
            async for text, calls in answer.pieces():
                yield json.dumps(line(text, False, answer, calls)) + "\n"
            yield json.dumps({**line("", True, answer, []), **timings(answer, self.load_s).model_dump()}) + "\n"
        except VinolmError as exc:
            log.warning("ollama stream failed: %s", exc.message)
            yield json.dumps({"error": exc.message}) + "\n"
        except Exception as exc:  # a bug of ours: say so in the stream rather than cut it
            log.exception("ollama stream failed")
            yield json.dumps({"error": f"internal error: {type(exc).__name__}"}) + "\n"
        finally:
            answer.close()
