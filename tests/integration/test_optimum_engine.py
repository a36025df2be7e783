"""The optimum engine's own contract on the default model: streaming, stop strings and
stop ids, cancellation from another thread, seeds, penalties, and requests rejected
before any work starts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps

import pytest

from vinolm.engines import Engine
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel
from vinolm.types import Chunk, Constraint, GenerationParams, Message, Request

pytestmark = pytest.mark.slow

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def optimum(engine: Callable[..., Engine], default_model: PreparedModel) -> Engine:
    return engine("optimum", default_model.path)


def greedy(max_new_tokens: int = 24, **changes: object) -> GenerationParams:
    return GenerationParams(max_new_tokens=max_new_tokens, ignore_eos=True).with_(**changes)


@contextmanager
def model_steps(engine: Engine) -> Iterator[list[int]]:
    """Count the model's forward passes: tokens the engine computed, shown or not."""
    model = engine._model  # type: ignore[attr-defined]
    calls: list[int] = []
    forward = model.forward

    @wraps(forward)  # generate() checks its arguments against forward's signature
    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return forward(*args, **kwargs)

    model.forward = counted
    try:
        yield calls
    finally:
        del model.forward


def test_streams_one_chunk_per_token_while_generating(optimum: Engine) -> None:
    generation = optimum.generate(Request(prompt=PROMPT, params=greedy(24)))
    chunks: list[Chunk] = []
    still_running_at_first_chunk = None
    for chunk in generation:
        if not chunks:
            still_running_at_first_chunk = not generation.wait(0)
        chunks.append(chunk)
    assert still_running_at_first_chunk, "the first chunk came only after generation ended"
    assert [len(c.token_ids) for c in chunks] == [1] * 24
    assert [c.finish_reason for c in chunks] == [None] * 23 + ["length"]
    ids = [t for c in chunks for t in c.token_ids]
    text = "".join(c.text for c in chunks)
    assert text == optimum.detokenize(optimum.tokenize(PROMPT) + ids)[len(PROMPT):]
    assert generation.metrics.output_tokens == 24
    assert generation.metrics.input_tokens == len(optimum.tokenize(PROMPT))
    assert 0 < generation.metrics.ttft < generation.metrics.total_time


def test_chat_answer_ends_at_the_end_of_turn_token(optimum: Engine) -> None:
    question = [Message("user", "What is the capital of France?")]
    result = optimum.complete(Request(messages=question, params=GenerationParams(max_new_tokens=48)))
    assert "Paris" in result.text
    assert result.finish_reasons == ["stop"]
    assert result.token_ids[0][-1] in optimum.eos_token_ids
    assert "<|im_end|>" not in result.text


def test_stop_string_split_across_tokens_ends_the_text_before_it(optimum: Engine) -> None:
    full = optimum.complete(Request(prompt=PROMPT, params=greedy(24)))
    ids, prompt_ids = full.token_ids[0], optimum.tokenize(PROMPT)

    def text_of(count: int) -> str:
        return optimum.detokenize(prompt_ids + ids[:count])[len(PROMPT):]

    # A stop string made of the last two characters of one token and the first two of
    # the next, so neither token alone contains it.
    boundary = next(i for i in range(4, 20) if len(text_of(i)) - len(text_of(i - 1)) >= 2
                    and len(text_of(i + 1)) - len(text_of(i)) >= 2)
    cut = len(text_of(boundary))
    stop = text_of(boundary + 1)[cut - 2 : cut + 2]
    needed = next(k for k in range(1, 25) if stop in text_of(k))  # boundary + 1, unless it occurs earlier
    with model_steps(optimum) as steps:
        stopped = optimum.complete(Request(prompt=PROMPT, params=greedy(24, stop=[stop])))
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.finish_reasons == ["stop"]
    assert len(stopped.token_ids[0]) == needed
    assert len(steps) == needed  # the criterion ended generation at once


def test_stop_token_id_ends_generation_including_it(optimum: Engine) -> None:
    ids = optimum.complete(Request(prompt=PROMPT, params=greedy(24))).token_ids[0]
    stop_id = ids[6]
    first = ids.index(stop_id)
    result = optimum.complete(Request(prompt=PROMPT, params=greedy(24, stop_token_ids=[stop_id])))
    assert result.token_ids[0] == ids[: first + 1]
    assert result.finish_reasons == ["stop"]


def test_cancel_from_another_thread_stops_within_one_step(optimum: Engine) -> None:
    """Drive ``_produce`` with our own ``emit``, to count tokens at the moment of cancel."""
    request = Request(prompt=PROMPT, params=greedy(400))
    chunks: list[Chunk] = []
    lock, cancelled, at_cancel = threading.Lock(), threading.Event(), []

    def emit(chunk: Chunk) -> None:
        with lock:
            chunks.append(chunk)

    def canceller() -> None:
        while True:
            with lock:
                if len(chunks) >= 5:
                    cancelled.set()
                    at_cancel.append(sum(len(c.token_ids) for c in chunks))
                    return
            time.sleep(0.001)

    thread = threading.Thread(target=canceller)
    thread.start()
    with model_steps(optimum) as steps:
        metrics = optimum._produce(request, emit, cancelled)
    thread.join()
    produced = sum(len(c.token_ids) for c in chunks)
    assert at_cancel[0] <= produced <= at_cancel[0] + 1
    assert len(steps) <= at_cancel[0] + 1
    assert chunks[-1].finish_reason == "cancelled"
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert metrics.output_tokens == produced


def test_cancel_through_the_handle_leaves_the_engine_ready(optimum: Engine) -> None:
    expected = optimum.complete(Request(prompt=PROMPT, params=greedy(12))).token_ids[0]
    generation = optimum.generate(Request(prompt=PROMPT, params=greedy(2000)))
    chunks = []
    with model_steps(optimum) as steps:
        for chunk in generation:
            chunks.append(chunk)
            if len(chunks) == 3:
                threading.Thread(target=generation.cancel).start()
    assert chunks[-1].finish_reason == "cancelled"
    assert len(steps) < 50
    assert optimum.complete(Request(prompt=PROMPT, params=greedy(12))).token_ids[0] == expected


def test_cancel_ends_beam_search(optimum: Engine) -> None:
    generation = optimum.generate(Request(prompt=PROMPT, params=greedy(2000, num_beams=4)))
    threading.Timer(1.0, generation.cancel).start()
    with model_steps(optimum) as steps:
        result = generation.result()
    assert result.finish_reasons == ["cancelled"]
    assert 0 < len(result.token_ids[0]) == len(steps) < 2000


def test_same_seed_same_sample_and_n_sequences_stream_by_index(optimum: Engine) -> None:
    params = GenerationParams(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=50, min_p=0.02,
                              seed=7, num_return_sequences=3, ignore_eos=True)
    chunks = list(optimum.generate(Request(prompt=PROMPT, params=params)))
    again = optimum.complete(Request(prompt=PROMPT, params=params))
    other = optimum.complete(Request(prompt=PROMPT, params=params.with_(seed=8)))
    by_index = {i: [t for c in chunks if c.index == i for t in c.token_ids] for i in range(3)}
    assert {c.index for c in chunks} == {0, 1, 2}
    assert [by_index[i] for i in range(3)] == again.token_ids
    assert all(len(ids) == 16 for ids in again.token_ids)
    assert again.token_ids != other.token_ids
    assert len({tuple(ids) for ids in again.token_ids}) > 1


def test_presence_and_frequency_penalties_cut_repetition(optimum: Engine) -> None:
    prompt = "List: apple, apple, apple, apple, apple,"
    plain = optimum.complete(Request(prompt=prompt, params=greedy(24))).token_ids[0]
    penalized = optimum.complete(
        Request(prompt=prompt, params=greedy(24, presence_penalty=1.5, frequency_penalty=1.5))
    ).token_ids[0]
    assert len(set(penalized)) > len(set(plain))


@pytest.mark.parametrize(
    "changes",
    [{"top_p": 1.5}, {"top_p": 0.0}, {"temperature": -0.1}, {"max_new_tokens": 0},
     {"num_beams": 2, "temperature": 0.7}, {"constraint": Constraint("regex", pattern="[a-")},
     {"stop": [""]}],
    ids=str,
)
def test_bad_requests_fail_before_work_starts(optimum: Engine, changes: dict[str, object]) -> None:
    calls = []
    model = optimum._model  # type: ignore[attr-defined]
    original = model.generate
    model.generate = lambda *a, **k: calls.append(1)  # any work would land here
    try:
        with pytest.raises(InvalidRequest):
            optimum.generate(Request(prompt=PROMPT, params=GenerationParams().with_(**changes)))
    finally:
        model.generate = original
    assert calls == []


def test_prompt_longer_than_the_context_is_rejected(optimum: Engine) -> None:
    too_long = "word " * (optimum.context_length + 10)
    with pytest.raises(InvalidRequest, match="context"):
        optimum.complete(Request(prompt=too_long, params=greedy(4)))


def test_missing_optimum_intel_is_one_clear_error() -> None:
    """Without optimum-intel, choosing the engine is a one-line error, before any loading."""
    script = (
        "import sys; sys.modules['optimum.intel'] = None\n"  # makes the import fail
        "from vinolm.cli import main\n"
        "sys.exit(main(['generate', 'Hi', '--engine', 'optimum']))\n"
    )
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("vinolm: error: the optimum engine needs"), done.stderr
    assert "optimum.intel is missing" in done.stderr and "Traceback" not in done.stderr
