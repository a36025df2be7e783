"""genai's chosen-token log-probabilities are the model's: the same values native reports.

genai hands them out only in its continuous-batching pipeline (what ``vinolm serve`` runs);
the single-stream LLMPipeline keeps just each sequence's sum, so there a request for them is
refused. The arithmetic is exact f32 (conftest's F32 without activation quantization), so
both engines pick the same greedy tokens and the values differ only by rounding (at most
3e-4 on the default model, measured on an AMD EPYC). genai computes them before penalties,
temperature and top-p, as native does; a sampled answer is checked token by token against
native's log-softmax of the same prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from tests.integration.conftest import F32

from vinolm.engines import Engine, EngineOptions, load_engine
from vinolm.engines.native import NativeEngine
from vinolm.engines.sampling import log_softmax
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel
from vinolm.types import GenerationParams, Request

pytestmark = pytest.mark.slow

EXACT = {**F32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
TOLERANCE = 1e-3
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "日本語のテキストと中文、そして emoji 🙂",
]
GREEDY = GenerationParams(max_new_tokens=24, ignore_eos=True, logprobs=1)
PENALTIES = {"repetition_penalty": 1.3, "presence_penalty": 0.4, "frequency_penalty": 0.6}
Chosen = dict[int, list[tuple[int, float]]]  # per returned sequence: (token id, logprob)


@pytest.fixture(scope="module")
def batching(default_model: PreparedModel) -> Iterator[Engine]:
    engine = load_engine("genai", default_model, EngineOptions(ov_config=dict(EXACT), batching=True))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def native(engine: Callable[..., Engine], default_model: PreparedModel) -> NativeEngine:
    loaded = engine("native", default_model.path, DYNAMIC_QUANTIZATION_GROUP_SIZE=0)
    assert isinstance(loaded, NativeEngine)
    return loaded


def chosen(engine: Engine, prompt: str, params: GenerationParams) -> Chosen:
    """Every generated token with its logprob; a chunk carries exactly one per token id."""
    found: Chosen = {}
    for chunk in engine.generate(Request(prompt=prompt, params=params)):
        assert chunk.logprobs is not None and len(chunk.logprobs) == len(chunk.token_ids), chunk
        found.setdefault(chunk.index, []).extend(zip(chunk.token_ids, chunk.logprobs, strict=True))
    return found


def teacher_forced(native: NativeEngine, prompt: str, ids: list[int]) -> list[float]:
    """The model's log-probability of each of ``ids`` after the prompt and the ids before it."""
    start = native.tokenize(prompt)
    values = []
    try:
        for k, token in enumerate(ids):
            native.lm.reset()
            values.append(float(log_softmax(np.asarray(native.lm.prefill(start + ids[:k])).reshape(-1))[token]))
    finally:
        native.lm.reset()
    return values


@pytest.mark.parametrize("penalties", [{}, PENALTIES], ids=["plain", "penalties"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_logprobs_match_native(
    batching: Engine, native: NativeEngine, prompt: str, penalties: dict[str, float]
) -> None:
    params = GREEDY.with_(**penalties)
    (mine,) = chosen(batching, prompt, params).values()
    (theirs,) = chosen(native, prompt, params).values()
    assert [t for t, _ in mine] == [t for t, _ in theirs]
    difference = max(abs(a - b) for (_, a), (_, b) in zip(mine, theirs, strict=True))
    assert difference < TOLERANCE, f"genai and native logprobs differ by up to {difference:.2e}"
    assert all(value <= 0 for _, value in mine)


def test_sampled_logprobs_are_the_models_before_temperature(batching: Engine, native: NativeEngine) -> None:
    """Two sampled sequences at a high temperature with top-p and a penalty: each value is
    still log-softmax of the raw logits at that position, not of what the sampler drew from."""
    prompt = PROMPTS[0]
    params = GREEDY.with_(max_new_tokens=12, temperature=1.7, top_p=0.9, seed=3, repetition_penalty=1.2,
                          num_return_sequences=2)
    sequences = chosen(batching, prompt, params)
    assert sorted(sequences) == [0, 1]
    for pairs in sequences.values():
        ids, values = [t for t, _ in pairs], [v for _, v in pairs]
        assert values == pytest.approx(teacher_forced(native, prompt, ids), abs=TOLERANCE)


def test_single_stream_and_alternatives_are_refused(batching: Engine, engine: Callable[..., Engine],
                                                    default_model: PreparedModel) -> None:
    single = engine("genai", default_model.path)
    with pytest.raises(InvalidRequest, match="continuous batching") as caught:
        single.generate(Request(prompt="x", params=GREEDY))
    assert caught.value.param == "logprobs" and "--engine native" in caught.value.message
    with pytest.raises(InvalidRequest, match="only the chosen token's log-probability") as alternatives:
        batching.generate(Request(prompt="x", params=GREEDY.with_(top_logprobs=2)))
    assert alternatives.value.param == "top_logprobs" and "--engine native" in alternatives.value.message
