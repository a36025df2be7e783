"""Text embeddings: one forward pass of an encoder, pooled into one vector per input.

The plain OpenVINO runtime runs the exported encoder and numpy pools its last hidden
states the way the export recorded (``vinolm.json``: mean, [CLS] or last token; L2
normalised or not). openvino-genai's ``TextEmbeddingPipeline`` computes the same vectors
from text (a test checks they agree), but it takes only strings, and clients of the OpenAI
API also send token arrays, which must reach the model exactly as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vinolm.engines import compile_cache
from vinolm.engines.base import EngineOptions
from vinolm.engines.common import load_error
from vinolm.engines.ovconfig import check_device, compile_properties
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel
from vinolm.types import check_text

#: Inputs per forward pass: padding grows with the longest input, so big batches of short
#: texts are cheap and one long text does not make a thousand short ones expensive.
BATCH = 32


@dataclass
class Embeddings:
    """One float32 vector per input (rows of ``vectors``) and the tokens each input took."""

    vectors: np.ndarray
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class Pooling:
    """How last hidden states become one vector, as the export recorded it."""

    mode: str = "mean"
    normalize: bool = True
    dimensions: int = 0
    max_length: int = 512
    query_prefix: str = ""
    document_prefix: str = ""

    @classmethod
    def of(cls, model: PreparedModel) -> Pooling:
        info = dict(model.info.get("embedding") or {})
        return cls(mode=info.get("pooling", "mean"), normalize=bool(info.get("normalize", True)),
                   dimensions=int(info.get("dimensions") or 0), max_length=int(info.get("max_length") or 512),
                   query_prefix=info.get("query_prefix", ""), document_prefix=info.get("document_prefix", ""))


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """[batch, tokens, width] hidden states and their [batch, tokens] mask -> [batch, width]."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        return hidden[np.arange(len(hidden)), mask.sum(axis=1) - 1]
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def finish(vectors: np.ndarray, normalize: bool, dimensions: int | None) -> np.ndarray:
    """Cut to ``dimensions`` (Matryoshka-style, as OpenAI's ``dimensions``), then normalise."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize or dimensions is not None:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors.astype(np.float32)


class EmbeddingEngine:
    """A loaded embedding model: ``embed(texts or token arrays)``; thread-safe."""

    name = "embedding"

    def __init__(self, model: PreparedModel, options: EngineOptions | None = None) -> None:
        import openvino as ov
        import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

        if not model.is_embedding:
            raise InvalidRequest(f"{model.name} is not an embedding model", param="model")
        self.model = model
        self.options = opts = options or EngineOptions()
        check_device(opts.device)
        props = compile_properties(opts.device, opts.ov_config, opts.cache_dir or compile_cache.directory(),
                                   opts.vinolm_defaults)
        compile_cache.make_room(props)
        core = ov.Core()
        try:
            self._model = core.compile_model(model.path / "openvino_model.xml", opts.device, props)
            self._tokenizer = core.compile_model(model.path / "openvino_tokenizer.xml", "CPU")
        except RuntimeError as exc:
            raise load_error("OpenVINO", model.path, exc) from exc
        self._inputs = {name for port in self._model.inputs for name in port.get_names()}
        self.pooling = Pooling.of(model)
        self.pad_id = int(model.config.get("pad_token_id") or 0)

    @property
    def dimensions(self) -> int:
        return self.pooling.dimensions or int(self._model.output(0).get_partial_shape()[-1].get_length())

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, cut to the model's length."""
        out = self._tokenizer(texts)
        ids, mask = out["input_ids"], out["attention_mask"]
        return [row[m.astype(bool)].tolist()[: self.pooling.max_length] for row, m in zip(ids, mask, strict=True)]

    def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None = None,
              kind: str = "document") -> Embeddings:
        """Vectors for texts (given the model's query or document prefix) or token arrays."""
        if dimensions is not None and not 0 < dimensions <= self.dimensions:
            raise InvalidRequest(f"dimensions must be between 1 and {self.dimensions} for {self.model.name}, "
                                 f"got {dimensions}", param="dimensions")
        if not inputs:
            raise InvalidRequest("input is empty", param="input")
        if isinstance(inputs[0], str):
            for i, text in enumerate(inputs):
                check_text(text, f"input.{i}")  # type: ignore[arg-type]
                if not text.strip():  # type: ignore[union-attr]
                    raise InvalidRequest(f"input {i} is empty: there is nothing to embed", param="input")
            prefix = self.pooling.query_prefix if kind == "query" else self.pooling.document_prefix
            rows = self.tokenize([prefix + text for text in inputs])  # type: ignore[operator]
        else:
            rows = [list(row) for row in inputs]  # type: ignore[arg-type]
            self._check_ids(rows)
        too_long = next((i for i, row in enumerate(rows) if len(row) > self.pooling.max_length), None)
        if too_long is not None:
            raise InvalidRequest(f"input {too_long} has {len(rows[too_long])} tokens; {self.model.name} takes at "
                                 f"most {self.pooling.max_length}", param="input")
        vectors = [self._forward(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]
        return Embeddings(finish(np.concatenate(vectors), self.pooling.normalize, dimensions),
                          [len(row) for row in rows])

    def _check_ids(self, rows: list[list[int]]) -> None:
        """Ids the model has no row for: OpenVINO's gather answers them with some vector (or
        overflows on ids past int64), so they are refused by name."""
        vocabulary = int(self.model.config.get("vocab_size") or 0)
        for i, row in enumerate(rows):
            bad = next((t for t in row if t < 0 or (vocabulary and t >= vocabulary) or t >= 2**63), None)
            if bad is not None:
                known = f"0 to {vocabulary - 1}" if vocabulary else "non-negative"
                raise InvalidRequest(f"input {i} has token id {bad}; {self.model.name}'s token ids are {known}",
                                     param="input")

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        if "position_ids" in self._inputs:
            feed["position_ids"] = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
        request = self._model.create_infer_request()  # one per call: callers may be concurrent
        hidden = request.infer(feed)[self._model.output(0)]
        return pool(np.asarray(hidden, dtype=np.float32), mask, self.pooling.mode)

    def close(self) -> None:
        """Nothing to stop: the compiled model is freed with the engine."""
