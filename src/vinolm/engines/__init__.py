"""Engine registry: names -> classes, imported only when chosen (optimum pulls in torch)."""

from __future__ import annotations

import importlib

from vinolm.engines.base import Engine, EngineOptions, Generation, Speculation
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel

ENGINES: dict[str, str] = {
    "genai": "vinolm.engines.genai:GenaiEngine",
    "native": "vinolm.engines.native:NativeEngine",
    "optimum": "vinolm.engines.optimum:OptimumEngine",
}
DEFAULT_ENGINE = "genai"


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise InvalidRequest(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    module, _, attr = ENGINES[name].partition(":")
    cls: type[Engine] = getattr(importlib.import_module(module), attr)
    return cls


def load_engine(name: str, model: PreparedModel, options: EngineOptions | None = None) -> Engine:
    """Build the engine ``name`` for ``model``; unknown names fail before anything loads."""
    return engine_class(name)(model, options)


__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "EngineOptions", "Generation", "Speculation", "engine_class", "load_engine"]
