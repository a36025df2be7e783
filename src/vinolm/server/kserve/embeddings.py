"""KServe v2 inference on an embedding model, shared by the REST routes and the gRPC servicer.

The signature is the one embedding servers publish for KServe (OVMS, Triton's ensembles):
``text_input`` BYTES [N] in, ``embedding`` FP32 [N, dim] out, one row per text, computed by
``ModelService.embed`` (the same admission and metrics as generation). The only request
parameter is ``dimensions`` (keep the first N dimensions, renormalised); any other is a 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vinolm.errors import InvalidRequest
from vinolm.server.kserve.protocol import VERSION, ModelMetadata, TensorMetadata, model_metadata_of
from vinolm.server.kserve.tensors import TRANSPORT_KEYS, InputTensor, check_transport, decode_prompts
from vinolm.server.registry import Registry, ServedModel
from vinolm.server.service import ModelService

TEXT_INPUT = "text_input"
EMBEDDING = "embedding"


@dataclass
class MatrixTensor:
    """An FP32 [rows, dim] output: ``data`` row-major for JSON, ``raw()`` little-endian float32."""

    name: str
    rows: np.ndarray
    datatype: str = "FP32"

    @property
    def shape(self) -> list[int]:
        return list(self.rows.shape)

    @property
    def data(self) -> list[float]:
        return [float(x) for x in self.rows.reshape(-1)]

    def raw(self) -> bytes:
        return np.ascontiguousarray(self.rows, dtype="<f4").tobytes()


def embedding_metadata(name: str, dimensions: int) -> ModelMetadata:
    return ModelMetadata(name=name, versions=[VERSION], platform="openvino",
                         inputs=[TensorMetadata(name=TEXT_INPUT, datatype="BYTES", shape=[-1])],
                         outputs=[TensorMetadata(name=EMBEDDING, datatype="FP32", shape=[-1, dimensions or -1])])


def metadata_for(registry: Registry, name: str) -> ModelMetadata:
    """A model's signature, loaded or not (REST ``/v2/models/{name}`` and gRPC
    ``ModelMetadata``): clients read it before their first request, which is what loads the
    model, so an embedding model must not describe itself as a chat model until then."""
    served = registry.resolve(name)
    name = name or served.name  # no name: the default model, named as it is
    service = registry.loaded(name)
    if service is not None:
        return embedding_metadata(name, service.engine.dimensions) if service.embeds else model_metadata_of(name)
    width = embedding_width(served)
    return model_metadata_of(name) if width is None else embedding_metadata(name, width)


def embedding_width(model: ServedModel) -> int | None:
    """The vector width of a model that is not loaded, from its export's ``vinolm.json`` or,
    not exported yet, the embedding catalog (0: unknown until it loads); None for a chat model."""
    from vinolm.catalog import find_embedding
    from vinolm.engines.embedding import Pooling

    prepared = model.prepared()
    if prepared is not None:
        return Pooling.of(prepared).dimensions if prepared.is_embedding else None
    entry = find_embedding(model.reference)
    return entry.dimensions if entry is not None else None


def _dimensions(parameters: Mapping[str, Any]) -> int | None:
    unknown = sorted(set(parameters) - TRANSPORT_KEYS - {"dimensions"})
    if unknown:
        raise InvalidRequest(f"unknown parameter(s) for an embedding model: {', '.join(unknown)}; "
                             "supported: dimensions", param="parameters")
    check_transport(parameters)
    value = parameters.get("dimensions")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequest(f"dimensions must be a positive integer, got {value!r}", param="dimensions")
    return value


def _outputs(names: Sequence[str]) -> None:
    unknown = [name for name in names if name != EMBEDDING]
    if unknown:
        raise InvalidRequest(f"unknown output(s): {', '.join(unknown)}; this model has {EMBEDDING}", param="outputs")


async def embed(service: ModelService, inputs: Sequence[InputTensor], parameters: Mapping[str, Any],
                outputs: Sequence[str], protocol: str) -> list[MatrixTensor]:
    """The ``embedding`` tensor for the request's ``text_input`` texts."""
    texts = decode_prompts(inputs, TEXT_INPUT)
    dimensions = _dimensions(parameters)
    _outputs(outputs)
    for index, text in enumerate(texts):
        if not text.strip():
            raise InvalidRequest(f"{TEXT_INPUT}[{index}] is empty", param=TEXT_INPUT)
    result = await service.embed(texts, protocol, dimensions)
    return [MatrixTensor(EMBEDDING, np.asarray(result.vectors, dtype=np.float32))]
