"""The server's batching pipeline after a step that throws.

openvino-genai leaves a ``ContinuousBatchingPipeline`` whose ``step()`` threw in the middle of
scheduling: every later step fails ("already in scheduling phase") until the process restarts.
A grammar xgrammar refuses (it compiles them inside the step) did that to every request on every
API after it. vinolm refuses such grammars up front (``tests/unit/test_constraints.py``); here a
raw genai request past those checks stands for any step that throws, and the requests after it
must still be answered.
"""

from __future__ import annotations

import threading

import openvino_genai as genai
import pytest

from vinolm.engines.base import PreparedInput
from vinolm.engines.batching import BatchScheduler
from vinolm.engines.streaming import TextStreamer
from vinolm.models import PreparedModel
from vinolm.types import Chunk, Metrics

pytestmark = pytest.mark.slow


def _ask(scheduler: BatchScheduler, prompt_ids: list[int], grammar: str | None = None) -> list[Chunk]:
    config = genai.GenerationConfig()
    config.max_new_tokens = 4
    if grammar is not None:
        config.structured_output_config = genai.StructuredOutputConfig(grammar=grammar)
    chunks: list[Chunk] = []
    scheduler.run(PreparedInput(prompt_ids, 4, [], set()), config,
                  lambda: TextStreamer(lambda ids: scheduler.tokenizer.decode(ids)), chunks.append,
                  threading.Event(), Metrics())
    return chunks


def test_the_requests_after_a_failed_step_are_answered(default_model: PreparedModel) -> None:
    scheduler = BatchScheduler(default_model.path, "CPU", {}, kv_cache_gb=1)
    try:
        ids = list(scheduler.tokenizer.encode("The capital of France is").input_ids.data[0])
        before = _ask(scheduler, ids)
        with pytest.raises(RuntimeError, match="EBNF parser error"):
            _ask(scheduler, ids, grammar="root ::= ")
        for _ in range(2):
            after = _ask(scheduler, ids)
            assert sum(len(chunk.token_ids) for chunk in after) == 4
            assert [chunk.token_ids for chunk in after] == [chunk.token_ids for chunk in before]
    finally:
        scheduler.close()
