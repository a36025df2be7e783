"""Switching device recompiles the engine for everyone and keeps serving (the UI's device selector)."""

from __future__ import annotations

import pytest

from vinolm.engines import load_engine
from vinolm.engines.base import EngineOptions
from vinolm.errors import InvalidRequest
from vinolm.models import prepare
from vinolm.server.service import ModelService
from vinolm.types import GenerationParams, Request

pytestmark = pytest.mark.slow


def answer(service: ModelService) -> str:
    ticket = service.submit(Request(prompt="The capital of France is", params=GenerationParams(max_new_tokens=6)),
                            "test")
    return "".join(chunk.text for chunk in service.stream(ticket))


def test_switch_device_recompiles_and_keeps_serving() -> None:
    service = ModelService(load_engine("genai", prepare(), EngineOptions(batching=True)))
    first = service.engine
    before = answer(service)
    service.switch_device("AUTO")
    assert service.engine is not first
    assert service.engine.options.device == "AUTO"
    # Same model, same answer: not to the token, since AUTO is not compiled with vinolm's CPU
    # defaults and picks its own precision (on AMD EPYC the greedy answers part at token 5).
    assert before.startswith(" Paris") and answer(service).startswith(" Paris")
    with pytest.raises(InvalidRequest, match="NPU9"):
        service.switch_device("NPU9")
    assert service.engine.options.device == "AUTO"
    service.engine.close()
