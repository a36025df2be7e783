"""Ollama API <-> ModelService: model listings, and answers as NDJSON lines or one object.

The served model is described from its OpenVINO folder (size on disk, weight format,
architecture), since vinolm has no Ollama manifest: ``digest`` is the SHA-256 of the
model's ``openvino_model.xml``, and ``load_duration`` is 0 because the model was loaded
when the server started and stays loaded (``keep_alive`` changes nothing; ``/api/ps``
reports no expiry). A stream is answered once its first chunk exists, so an error the
engine finds at once is still an HTTP 4xx; a later failure is an ``{"error": ...}`` line,
which the ollama client raises as ``ResponseError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response

from vinolm import __version__
from vinolm.errors import InvalidRequest, VinolmError
from vinolm.server.answer import Answer
from vinolm.server.ollama.protocol import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    ModelDetails,
    ModelEntry,
    ModelList,
    ShowResponse,
    Timings,
    VersionResponse,
)
from vinolm.server.openai.serving import EventStreamResponse
from vinolm.server.service import ModelService

log = logging.getLogger("vinolm.ollama")
PROTOCOL = "ollama"
NDJSON = "application/x-ndjson"
_NS = 1_000_000_000


def now() -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def timings(answer: Answer) -> Timings:
    m = answer.metrics
    return Timings(total_duration=int(m.total_time * _NS), load_duration=0,
                   prompt_eval_count=m.input_tokens, prompt_eval_duration=int(m.ttft * _NS),
                   eval_count=m.output_tokens, eval_duration=int(max(m.total_time - m.ttft, 0.0) * _NS))


def done_reason(answer: Answer) -> str:
    return "length" if answer.hit_length else "stop"


@cache
def _folder_facts(path: Path) -> tuple[int, str, str]:
    """Size on disk, digest and modification time of a model folder; read once per process."""
    xml = path / "openvino_model.xml"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    digest = hashlib.sha256(xml.read_bytes()).hexdigest() if xml.is_file() else ""
    modified = datetime.fromtimestamp(xml.stat().st_mtime if xml.is_file() else 0, UTC)
    return size, digest, modified.isoformat().replace("+00:00", "Z")


class OllamaServing:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    # -- models ------------------------------------------------------------------------------
    @staticmethod
    def version() -> VersionResponse:
        return VersionResponse(version=__version__)

    def tags(self) -> ModelList:
        return ModelList(models=[self._entry(name) for name in self.service.served_names])

    def ps(self) -> ModelList:
        """Every served name is loaded (vinolm loads its model at start and never unloads it)."""
        context = self.service.engine.context_length
        return ModelList(models=[self._entry(name).model_copy(update={"size_vram": 0, "context_length": context})
                                 for name in self.service.served_names])

    def show(self, name: str) -> ShowResponse:
        self.service.check_model(name)
        model = self.service.engine.model
        spec = model.chat_spec
        arch = self._details().family
        stops = "\n".join(f'stop "{s}"' for s in spec.stop_strings)
        return ShowResponse(
            modelfile=f"# served by vinolm\nFROM {model.path}\n", parameters=stops,
            template=spec.chat_template or "", details=self._details(),
            model_info={"general.architecture": arch, f"{arch}.context_length": self.service.engine.context_length},
            capabilities=["completion"], modified_at=_folder_facts(Path(model.path))[2])

    def embeddings_error(self, name: str) -> InvalidRequest:
        """The 400 for an embedding request (after the 404 for an unknown model)."""
        served = self.service.check_model(name)
        return InvalidRequest(f"model {served!r} is a chat model: vinolm does not serve embeddings yet",
                             param="model")

    def _details(self) -> ModelDetails:
        model = self.service.engine.model
        family = str(model.config.get("model_type") or (model.entry.architecture if model.entry else "unknown"))
        level = str(model.info.get("weight_format", "unknown")).upper()
        return ModelDetails(family=family, families=[family], quantization_level=level)

    def _entry(self, name: str) -> ModelEntry:
        size, digest, modified = _folder_facts(Path(self.service.engine.model.path))
        return ModelEntry(name=name, model=name, modified_at=modified, size=size, digest=digest,
                          details=self._details())

    # -- generation ----------------------------------------------------------------------------
    async def generate(self, body: GenerateRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        if body.loads_only:
            body.check_fields(self.service.limits.max_tokens_limit)
            return JSONResponse(GenerateResponse(model=model, created_at=now(), response="", done=True,
                                                 done_reason="load").model_dump())

        def line(text: str, done: bool, answer: Answer) -> dict[str, Any]:
            return GenerateResponse(model=model, created_at=now(), response=text, done=done,
                                    done_reason=done_reason(answer) if done else None).model_dump(exclude_none=True)

        request = body.to_request(self.service.limits.max_tokens_limit)
        return await self._serve(Answer(self.service, request, PROTOCOL), body.stream, line, raw)

    async def chat(self, body: ChatRequest, raw: HTTPRequest) -> Response:
        model = self.service.check_model(body.model)
        if body.loads_only:
            body.check_fields(self.service.limits.max_tokens_limit)
            return JSONResponse(ChatResponse(model=model, created_at=now(), message=AssistantMessage(content=""),
                                             done=True, done_reason="load").model_dump())

        def line(text: str, done: bool, answer: Answer) -> dict[str, Any]:
            return ChatResponse(model=model, created_at=now(), message=AssistantMessage(content=text), done=done,
                                done_reason=done_reason(answer) if done else None).model_dump(exclude_none=True)

        request = body.to_request(self.service.limits.max_tokens_limit)
        return await self._serve(Answer(self.service, request, PROTOCOL), body.stream, line, raw)

    async def _serve(self, answer: Answer, stream: bool, line: Callable[[str, bool, Answer], dict[str, Any]],
                     raw: HTTPRequest) -> Response:
        if not stream:
            if not await answer.complete(raw):
                return Response(status_code=499)
            return JSONResponse({**line(answer.text, True, answer), **timings(answer).model_dump()})
        if not await answer.start(raw):
            return Response(status_code=499)  # the client left before the first token
        response = EventStreamResponse(self._lines(answer, line), on_close=answer.close)
        response.headers["content-type"] = NDJSON  # the same close-on-disconnect stream, as NDJSON
        return response

    async def _lines(self, answer: Answer, line: Callable[[str, bool, Answer], dict[str, Any]]) -> AsyncIterator[str]:
        try:
            async for chunk in answer.chunks():
                if chunk.text:
                    yield json.dumps(line(chunk.text, False, answer)) + "\n"
            yield json.dumps({**line("", True, answer), **timings(answer).model_dump()}) + "\n"
        except VinolmError as exc:
            log.warning("ollama stream failed: %s", exc.message)
            yield json.dumps({"error": exc.message}) + "\n"
        except Exception as exc:  # a bug of ours: say so in the stream rather than cut it
            log.exception("ollama stream failed")
            yield json.dumps({"error": f"internal error: {type(exc).__name__}"}) + "\n"
        finally:
            answer.close()
