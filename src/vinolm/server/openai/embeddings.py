"""POST /v1/embeddings: OpenAI's wire format over ``ModelService.embed``.

``input`` is a string, a list of strings, a token array or a list of token arrays, as
OpenAI takes them; ``encoding_format`` float or base64 (little-endian float32, what the
``openai`` SDK decodes); ``dimensions`` keeps the first N dimensions, renormalised. vinolm's
``input_type`` extension (``query`` / ``document``) applies the model's query or document
prefix (E5, BGE), as Cohere's and Voyage's APIs name it.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest
from vinolm.server.openai.protocol import UsageInfo
from vinolm.server.service import ModelService
from vinolm.types import check_text

PROTOCOL = "openai"


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    input: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="Text, texts, a token array or token arrays to embed.")
    model: str | None = Field(None, description="A served embedding model (GET /v1/models).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions (renormalised).")
    user: str | None = Field(None, description="Accepted and not used (a local server has no abuse tracking).")
    input_type: Literal["query", "document"] = Field(
        "document", description="vinolm extension: embed as a search query or a document (the model's prefixes).")

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as one list, checked: no empty list, no empty or unencodable text."""
        value = self.input
        items: list = [value] if isinstance(value, str) else list(value)
        if items and all(isinstance(i, int) for i in items):
            items = [items]
        if not items:
            raise InvalidRequest("input is empty", param="input")
        for i, item in enumerate(items):
            where = "input" if isinstance(value, str) else f"input.{i}"
            if isinstance(item, str):
                check_text(item, where)
                if not item.strip():
                    raise InvalidRequest(f"{where} is empty", param=where)
            elif not item or any(t < 0 for t in item):
                raise InvalidRequest(f"{where} must be a non-empty array of non-negative token ids", param=where)
        return items


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: UsageInfo


async def create_embeddings(service: ModelService, body: EmbeddingRequest) -> EmbeddingResponse:
    model = service.check_model(body.model)
    result = await service.embed(body.inputs(), PROTOCOL, body.dimensions, body.input_type)
    data = [EmbeddingData(index=i, embedding=_encode(vector, body.encoding_format))
            for i, vector in enumerate(result.vectors)]
    tokens = result.total_tokens
    return EmbeddingResponse(data=data, model=model, usage=UsageInfo(prompt_tokens=tokens, total_tokens=tokens))


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
