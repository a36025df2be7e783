"""A library's exception inside an engine reaches the caller as vinolm's own message; the
library's words (pybind signatures, C++ paths) go to the log only."""

from __future__ import annotations

import asyncio
import threading

import pytest

from vinolm.engines.base import Emit, Generation
from vinolm.errors import EngineError, InvalidRequest
from vinolm.types import Metrics

LIBRARY_TEXT = "encode(): incompatible function arguments. The following argument types are supported"


def failing(exc: BaseException) -> Generation:
    def produce(emit: Emit, cancelled: threading.Event) -> Metrics:
        raise exc

    return Generation(produce)


def test_library_errors_are_logged_not_returned(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(EngineError) as caught:
        failing(TypeError(LIBRARY_TEXT)).result()
    assert "TypeError" in caught.value.message and "incompatible" not in caught.value.message
    assert any(LIBRARY_TEXT in record.getMessage() for record in caplog.records)


def test_async_consumers_get_the_same_message() -> None:
    async def consume() -> None:
        async for _ in failing(RuntimeError(LIBRARY_TEXT)):
            pass

    with pytest.raises(EngineError, match=r"RuntimeError\); the details are in the log"):
        asyncio.run(consume())


def test_vinolm_errors_pass_through_unchanged() -> None:
    with pytest.raises(InvalidRequest, match="prompt is too long") as caught:
        failing(InvalidRequest("prompt is too long", param="prompt")).result()
    assert caught.value.param == "prompt"
